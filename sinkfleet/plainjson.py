"""Row values as plain JSON: timestamps ISO-8601, bytes hex, UUIDs and decimals as text.

Light on purpose (no driver imports): the CLI prints rows with it at start-up cost zero.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any


def plain(value: Any) -> Any:
    """``value`` as JSON can hold it (lists item by item); anything else unchanged."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (uuid.UUID, Decimal)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)``: ``plain``, or a TypeError naming the
    type it cannot write."""
    out = plain(value)
    if out is value:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
    return out
