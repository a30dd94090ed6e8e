"""The endpoints' guard, as a pure unit: Host names and the exporter's token."""

from __future__ import annotations

import base64

from sinkfleet.http_server import Guard


def test_hosts_allowed_are_localhost_ip_literals_and_configured_names() -> None:
    guard = Guard.of(" lag.example.org ,Grafana.local.", "0.0.0.0")
    allowed = [None, "localhost", "LOCALHOST:9400", "127.0.0.1:9400", "[::1]:9400", "::1",
               "10.0.0.7", "lag.example.org", "lag.example.org.:9400", "grafana.local"]
    refused = ["", "evil.example", "lag.example.org.evil.example", "example.org",
               "localhost.evil.example", "[evil]:80", "127.0.0.1.nip.io"]
    assert [h for h in allowed if not guard.host_allowed(h)] == []
    assert [h for h in refused if guard.host_allowed(h)] == []
    assert Guard.of("*").host_allowed("anything.example")
    assert Guard.of("", "myhost").host_allowed("myhost:9300")


def test_token_as_bearer_or_basic_password_everywhere_but_open_paths() -> None:
    guard = Guard.of("", token="t0k")
    basic = "Basic " + base64.b64encode(b"user:t0k").decode()
    assert [guard.authorized("/api/lag", a) for a in (
        "Bearer t0k", "bearer  t0k ", basic)] == [True, True, True]
    assert [guard.authorized("/api/lag", a) for a in (
        None, "", "t0k", "Bearer", "Bearer t0kx", "Bearer t0", "Token t0k",
        "Basic " + base64.b64encode(b"t0k").decode(), "Basic !!!",
        "Basic " + base64.b64encode(b"t0k:").decode())] == [False] * 10
    assert guard.authorized("/healthz", None)
    assert Guard.of("").authorized("/api/lag", None)  # no token: open
