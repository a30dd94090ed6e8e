"""Per-record checks of a merge sink's CRDT inputs (pure, hot path).

A count below zero is no state any replica can be in; stored, it would lower nothing
(the join keeps the greatest) but it is a producer's bug the dead-letter topic should
show, with the reason, rather than a row hiding it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sinkfleet.catalogue import Sink
from sinkfleet.catalogue.merge import PN_FIELDS
from sinkfleet.errors import ValidationError
from sinkfleet.worker.column_checks import row_check


def _g_counter(value: Any, column: str) -> None:
    if value < 0:
        raise ValidationError(f"column {column}: a g_counter is the replica's count so far,"
                              f" never below 0; got {value}")


def _pn_counter(value: Any, column: str) -> None:
    for name in PN_FIELDS:
        if value[name] < 0:
            raise ValidationError(f"column {column}: {name} is the replica's total so far,"
                                  f" never below 0; got {value[name]}")


_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "g_counter": _g_counter, "pn_counter": _pn_counter}


def merge_checks(sink: Sink, names: list[str]) -> Callable[[tuple[Any, ...]], None] | None:
    """The checks of a row tuple (``names`` its columns) of ``sink``; None if none apply."""
    if sink.spec.merge is None:
        return None
    return row_check([(names.index(name), _CHECKS[kind], name)
                      for name, kind in sink.spec.merge.crdts.items() if kind in _CHECKS])
