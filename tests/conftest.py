"""Shared fixtures: the real local stack (started once), and factories for isolated
catalogues, topics and tables so tests never see each other's data.

Set SINKFLEET_TEST_BACKEND=testcontainers to run the services in Docker instead
(needs a Docker engine and the `testcontainers` extra); the default is the
project's own local stack, which needs none.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sinkfleet.config import Settings, load_settings
from tests.support.catalogue import ROOT, TestCatalogue, forget, make_catalogue


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """The real services. Started if needed (never skipped); stopped only if we started them."""
    os.environ.setdefault("SINKFLEET_STATE_DIR", str(ROOT / ".sinkfleet"))
    if os.environ.get("SINKFLEET_TEST_BACKEND") == "testcontainers":  # pragma: no cover
        # Docker instead (sinkfleet/dev/stack/containers.py): the same services and
        # settings, the state directory's generated passwords; stopped at session end.
        from sinkfleet.dev.stack.containers import DockerStack, docker_host

        docker = DockerStack(load_settings(home=ROOT), host=docker_host(),
                             say=lambda m: print(f"[testcontainers] {m}"))
        os.environ.update(docker.start())
        try:
            yield load_settings(home=ROOT)
        finally:
            docker.stop()
        return
    from sinkfleet.dev.stack import manager

    started = asyncio.run(manager.up(load_settings(home=ROOT), None,
                                     lambda m: print(f"[stack] {m}")))
    settings = load_settings(home=ROOT)  # again: `up` may have generated the secrets
    yield settings
    if started and os.environ.get("SINKFLEET_TEST_KEEP_STACK") != "1":
        manager.down(settings, started, lambda m: print(f"[stack] {m}"))


@pytest_asyncio.fixture
async def catalogue_factory(stack: Settings, tmp_path: Path
                            ) -> AsyncIterator[Callable[..., Any]]:
    """Build isolated catalogues with their topics applied and tables migrated."""
    from sinkfleet.ops.setup.topics import apply_topics
    from sinkfleet.sink.postgres.migrate import migrate

    made: list[TestCatalogue] = []

    async def factory(**kwargs: Any) -> TestCatalogue:
        tc = make_catalogue(tmp_path, stack, **kwargs)
        await apply_topics(tc.settings, tc.catalogue, say=lambda m: None)
        await migrate(tc.settings, tc.catalogue, lambda m: None)
        made.append(tc)
        return tc

    yield factory
    await _cleanup(made)


async def _cleanup(made: list[TestCatalogue]) -> None:
    if made:
        await forget(made[0].settings, tables=[tc.table for tc in made],
                     groups=[tc.group for tc in made], topics=[tc.topic for tc in made])


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
