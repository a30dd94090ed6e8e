"""Names with a trailing newline are refused everywhere a name is validated: a pattern
ending in ``$`` matches before a final ``\\n`` (``re.match(r"a$", "a\\n")`` matches), so
``"events\\n"`` would pass as an identifier, a topic, a field path or a duration."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from sinkfleet.catalogue import Catalogue
from sinkfleet.catalogue.models import FieldPath, Ident, TopicName, parse_keep
from sinkfleet.errors import ConfigError
from sinkfleet.ops.lifecycle.retention.schedule import parse_every
from sinkfleet.ops.replay.plan import parse_duration
from sinkfleet.ops.replay.shadow import shadow_catalogue
from sinkfleet.sink.postgres.ddl import quote_ident

TYPES: list[tuple[Any, str]] = [(Ident, "events"), (TopicName, "sinkfleet.events"),
                                (FieldPath, "reward.goal")]


@pytest.mark.parametrize(("kind", "good"), TYPES)
@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\n\n", " "])
def test_catalogue_names_refuse_trailing_whitespace(kind: Any, good: str, suffix: str) -> None:
    adapter = TypeAdapter(kind)
    assert adapter.validate_python(good) == good
    with pytest.raises(ValidationError):
        adapter.validate_python(good + suffix)


def test_quote_ident_refuses_a_trailing_newline() -> None:
    assert quote_ident("events") == '"events"'
    with pytest.raises(ValueError, match="unsafe SQL identifier"):
        quote_ident("events\n")


def test_shadow_schema_refuses_a_trailing_newline() -> None:
    empty = Catalogue.__new__(Catalogue)
    empty.sinks = {}
    with pytest.raises(ConfigError, match="not a valid schema name"):
        shadow_catalogue(empty, [], "sinkfleet_shadow\n")


@pytest.mark.parametrize(("parse", "good", "value", "error"), [
    (parse_keep, "7d", timedelta(days=7), ValueError),
    (parse_duration, "1h30m", timedelta(hours=1, minutes=30), ConfigError),
    (parse_duration, "PT1H", timedelta(hours=1), ConfigError),
])
def test_durations_refuse_a_trailing_newline(parse: Callable[[str], timedelta], good: str,
                                             value: timedelta, error: type[Exception]) -> None:
    assert parse(good) == value
    with pytest.raises(error):
        parse(good + "\n")


def test_schedule_every_still_accepts_surrounding_blanks() -> None:
    # --every strips on purpose (a value pasted from a file); the strict pattern still holds.
    assert parse_every(" 15m\n") == timedelta(minutes=15)
    with pytest.raises(ConfigError):
        parse_every("15m\nx")
