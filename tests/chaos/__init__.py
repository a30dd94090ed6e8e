"""Chaos scenarios (FAST profile) on the real local stack.

Every scenario follows steady → inject → heal → recover → verify:

* steady:  workers are up and storing batches;
* inject:  the fault (kill -9, rebalance storm, poison records, PostgreSQL cut mid-COPY);
* heal:    the fault stops (restart, stable group, proxy healed);
* recover: the group drains every published record;
* verify:  every acknowledged record is stored exactly once (count == distinct == N and
           the event ids are exactly the published ones), the dead-letter topic holds
           exactly the poison records, and ``sinkfleet.consumer_offsets`` equals the log
           end offsets of every partition.

Randomness is seeded (``random.Random(seed)``) so a run is reproducible. Each scenario
takes at most ~30 s. Marked ``chaos`` (and ``integration``); run by default — deselect
with ``-m 'not chaos'``.
"""
