"""Chaos scenarios on the real local stack.

Every scenario follows steady → inject → heal → recover → verify:

* steady:  workers are up and storing batches of three families at once — experience
           events (append), workflow states (state) and audit entries (audit);
* inject:  the fault (kill -9, rebalance storm, poison records, PostgreSQL cut mid-COPY,
           Redis outage or flush; long profile: PostgreSQL, Kafka or Redis restarted);
* heal:    the fault stops (restart, stable group, proxy healed, server back);
* recover: the group drains every published record (and the caches equal PostgreSQL);
* verify:  every acknowledged record stored exactly once (events and audit entries by id,
           state records by their history row), every state id at the newest version
           published and not deleted, every audit chain verifies, the dead-letter topics
           hold exactly the poison records, ``sinkfleet.consumer_offsets`` equals the log
           end offsets, and every stopped worker exited 0.

The scenarios live in ``scenarios.py`` (also run by ``benchmarks/chaos_report.py``), the
set-up in ``support.py``, the checks in ``invariants.py``. Randomness is seeded. The FAST
profile runs by default (deselect with ``-m 'not chaos'``); the LONG profile
(``test_restarts.py``) restarts the stack's servers and needs SINKFLEET_CHAOS_LONG=1.
The cluster faults (``test_cluster_faults.py``: leader and controller killed, rolling
restart, acks=all while ISR < min.insync) run on a private three-broker Kafka
(``cluster.py``, ``cluster_scenarios.py``) and add an independent check of the history
(``history.py``).
"""
