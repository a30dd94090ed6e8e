"""A schema-registry URL with ``user:password@`` is a secret: the password is sent as
Basic auth (by the blocking and the asyncio lookups alike) and never appears in an error
message (which becomes a dead-letter header or /healthz text), a log line or the settings'
repr — against a real HTTP registry on 127.0.0.1 that demands the credentials."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sinkfleet.avro import Codec, SchemaStore
from sinkfleet.avro.framing import SOE_HEADER_LEN, frame_confluent
from sinkfleet.config import load_settings
from sinkfleet.errors import DecodeError, RegistryUnavailable
from sinkfleet.urls import redact_url, split_credentials

PASSWORD = "s3cret-Pw%2F"  # percent-encoded in the URL: the registry sees "s3cret-Pw/"
SCHEMA = {"type": "record", "name": "r", "fields": [{"name": "n", "type": "long"}]}


class Registry(BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self) -> None:  # the http.server API
        auth = self.headers.get("Authorization")
        Registry.seen.append(auth)
        good = "Basic " + base64.b64encode(b"reader:s3cret-Pw/").decode()
        schema_id = int(self.path.rsplit("/", 1)[1])
        status = 401 if auth != good else 200 if schema_id == 1 else 404
        body = json.dumps({"schema": json.dumps(SCHEMA)} if status == 200 else
                          {"error_code": status}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[str]:
    Registry.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def confluent(schema_id: int) -> bytes:
    store = SchemaStore()
    return frame_confluent(schema_id, Codec(SCHEMA, store).encode({"n": 7})[SOE_HEADER_LEN:])


def test_credentials_are_sent_as_basic_auth_by_both_lookups(registry: str) -> None:
    url = f"http://reader:{PASSWORD}@{registry}"
    blocking = SchemaStore(url, timeout=2)
    assert Codec(SCHEMA, blocking).decode(confluent(1)) == {"n": 7}
    asyncio_store = SchemaStore(url, timeout=2)
    asyncio_store.inline_lookups = False
    asyncio.run(asyncio_store.look_up([1]))
    assert Codec(SCHEMA, asyncio_store).decode(confluent(1)) == {"n": 7}
    good = "Basic " + base64.b64encode(b"reader:s3cret-Pw/").decode()
    assert Registry.seen == [good, good]


def test_refusals_and_outages_never_quote_the_password(
        registry: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = registry.rsplit(":", 1)[1]
    cases = {  # url -> the error a lookup of id 2 meets
        f"http://reader:{PASSWORD}@{registry}": DecodeError,  # 404: a dead letter
        f"http://reader:wrong-{PASSWORD}@{registry}": RegistryUnavailable,  # 401
        f"http://reader:{PASSWORD}@127.0.0.1:99999": RegistryUnavailable,  # bad port
        f"http://reader:{PASSWORD}@[::1:{port}": RegistryUnavailable,  # malformed
        f"ftp://reader:{PASSWORD}@127.0.0.1:{port}": RegistryUnavailable,  # unsupported
    }
    messages = []
    for url, expected in cases.items():
        for inline in (True, False):
            store = SchemaStore(url, timeout=2)
            if not inline:
                store.inline_lookups = False
                asyncio.run(store.look_up([2]))
            with pytest.raises(DecodeError) as err:
                Codec(SCHEMA, store).decode(confluent(2))
            assert type(err.value) is expected, (url, inline, err.value)
            messages.append(str(err.value))
    assert len(messages) == 10
    assert [m for m in messages if "s3cret" in m] == []
    assert "s3cret" not in caplog.text


def test_settings_repr_hides_the_password() -> None:
    settings = load_settings(schema_registry_url=f"https://reader:{PASSWORD}@registry:8081")
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)
    assert settings.schema_registry_url == f"https://reader:{PASSWORD}@registry:8081"


@pytest.mark.parametrize(("url", "shown", "base", "creds"), [
    ("https://u:p%40ss@reg:8081/x?y#z", "https://u:***@reg:8081/x?y#z",
     "https://reg:8081/x?y#z", ("u", "p@ss")),
    ("http://u@reg", "http://u@reg", "http://reg", ("u", "")),
    ("http://reg:8081", "http://reg:8081", "http://reg:8081", None),
    ("http://reg/a@b", "http://reg/a@b", "http://reg/a@b", None),  # @ after the host
    ("http://u:p@[::1", "http://u:***@[::1", "http://[::1", ("u", "p")),
    ("u:p@reg:1", "u:***@reg:1", "reg:1", ("u", "p")),
])
def test_redact_and_split(url: str, shown: str, base: str,
                          creds: tuple[str, str] | None) -> None:
    assert redact_url(url) == shown
    assert split_credentials(url) == (base, creds)
