"""`sinkfleet serve` against its own OpenAPI document: schemathesis generates requests
from /openapi.json (every route but the endless stream; valid and odd parameters alike),
sends them over HTTP with a tenant's token, and checks that no answer is a 5xx and every
answer's status, content type and body are the ones the document declares."""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.read.serve_support import Served, seeded, served

__all__ = ["seeded", "served"]
pytestmark = pytest.mark.integration
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


async def test_every_answer_matches_the_document(served: Served) -> None:
    status, doc, _ = await served.get("/openapi.json")
    assert status == 200
    schema = schemathesis.openapi.from_dict(doc)
    auth = {"Authorization": f"Bearer {served.tokens['tenant-1']}"}
    tried: list[str] = []

    def run() -> None:
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path.endswith("/stream"):
                continue  # an endless response; tests/read/test_serve.py reads it

            @settings(max_examples=25, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy())
            def check(case: schemathesis.Case) -> None:
                response = case.call(base_url=served.url, headers=auth, timeout=10)
                case.validate_response(response, checks=CHECKS)

            check()
            tried.append(operation.path)

    await asyncio.to_thread(run)
    assert len(tried) == 9, tried  # every path of the document but the endless stream
