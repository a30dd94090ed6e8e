"""UUIDv7 ids for producers (sinkfleet.producer.ids): layout per RFC 9562."""

from __future__ import annotations

import random

import pytest

from sinkfleet.producer.ids import uuid7


def test_layout_time_version_variant() -> None:
    u = uuid7(0x0123_4567_89AB, randbits=lambda n: (1 << n) - 1)  # every random bit set
    assert u.int >> 80 == 0x0123_4567_89AB
    assert u.version == 7
    assert (u.int >> 62) & 0b11 == 0b10  # the RFC 4122/9562 variant
    assert str(u) == "01234567-89ab-7fff-bfff-ffffffffffff"


def test_ordered_by_millisecond_and_reproducible() -> None:
    ids = [uuid7(1_700_000_000_000 + ms, randbits=random.Random(ms).getrandbits)
           for ms in (5, 1, 3, 2, 4)]
    assert sorted(ids, key=lambda u: u.bytes) == [ids[1], ids[3], ids[2], ids[4], ids[0]]
    again = uuid7(1_700_000_000_005, randbits=random.Random(5).getrandbits)
    assert again == ids[0]


def test_now_by_default() -> None:
    import time

    before = time.time_ns() // 1_000_000
    ms = uuid7().int >> 80
    assert before <= ms <= time.time_ns() // 1_000_000


@pytest.mark.parametrize("ms", [-1, 1 << 48])
def test_out_of_range(ms: int) -> None:
    with pytest.raises(ValueError, match="48 bits"):
        uuid7(ms)
