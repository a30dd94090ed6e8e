"""The lag dashboard in a real (headless) Chromium, against the live local stack.

A group gets a known committed offset on every partition; the exporter runs in-process;
Playwright drives Debian's Chromium (never a browser of Playwright's own). Every number
the page shows for the group must equal /api/lag's at the same moment, the page must log
no errors and request nothing but the exporter, and a REWIND must show up as a badge and
as markers on the group's charts. A screenshot goes to tests/artifacts/dashboard.png.
At 500 groups x 12 partitions the overview lists every group worst first, filters, and
opens one card on demand (tests/artifacts/dashboard-500.png, dashboard-500.json).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiokafka import TopicPartition
from pydantic import SecretStr

from sinkfleet.config import Settings
from sinkfleet.http_server import Guard, serve
from sinkfleet.ops.lag.collect import GroupLag, PartitionLag, Snapshot
from sinkfleet.ops.lag.exporter import LagExporter
from sinkfleet.ops.lag.model import STATUSES, Sample, worst
from sinkfleet.ops.replay.plan import commit_empty_group
from sinkfleet.sink.postgres.connect import pg
from sinkfleet.worker.heartbeat import UPSERT
from tests.support.catalogue import ROOT, TestCatalogue
from tests.support.kafka import end_offsets
from tests.support.waiting import async_wait_for
from tests.support.worker import publish

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
SCREENSHOT = ROOT / "tests" / "artifacts" / "dashboard.png"
PARTITIONS = 4
INT_FIELDS = ("partition", "committed_offset", "log_end_offset", "lag_records",
              "expired_records")

# One read of everything the page shows for a group, straight from the DOM hooks.
READ_DOM = """(group) => {
  const q = (root, f) => root.querySelector('[data-field="' + f + '"]');
  const val = (root, f) => { const n = q(root, f); return n ? n.dataset.value : null; };
  const text = (root, f) => { const n = q(root, f); return n ? n.textContent.trim() : null; };
  const card = document.querySelector('article[data-group="' + CSS.escape(group) + '"]');
  if (!card) return null;
  const ov = document.querySelector('#overview tr[data-group="' + CSS.escape(group) + '"]');
  const overview = {};
  for (const f of ['status', 'members', 'partitions', 'lag_records', 'expired_records',
                   'lag_seconds']) overview[f] = val(ov, f);
  const stats = card.querySelector('.stats');
  const fields = ['topic', 'partition', 'committed_offset', 'log_end_offset', 'lag_records',
                  'expired_records', 'lag_seconds', 'status'];
  const rows = [...card.querySelectorAll('tr[data-topic]')].map(tr => {
    const row = {topic: tr.dataset.topic, partition: tr.dataset.partition, values: {},
                 texts: {}};
    for (const f of fields) { row.values[f] = val(tr, f); row.texts[f] = text(tr, f); }
    return row;
  });
  const dlq = {};
  for (const tr of document.querySelectorAll('#dlq tr[data-topic]')) {
    dlq[tr.dataset.topic] = val(tr, 'dlq_records');
  }
  return {generated_at: val(document.getElementById('totals'), 'generated_at'),
          status: val(card, 'status'), card_status: card.dataset.status,
          members: val(stats, 'members'), lag_records: val(stats, 'lag_records'),
          lag_seconds: val(stats, 'lag_seconds'),
          expired_records: val(stats, 'expired_records'), rows, dlq, overview};
}"""


def _require_browser() -> Any:
    """Chromium and Playwright, or a loud failure saying how to install them."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it with"
                    " `apt-get install -y chromium` (or ./scripts/install-system-deps.sh);"
                    " Playwright's own browser downloads are not used", pytrace=False)
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: .venv/bin/pip install -e '.[dev]'"
                    " (do not run `playwright install`; the test uses /usr/bin/chromium)",
                    pytrace=False)
    return async_playwright


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


async def get_json(url: str) -> Any:
    return await asyncio.to_thread(_get_json, url)


async def commit_offsets(tc: TestCatalogue, offsets: dict[TopicPartition, int]) -> None:
    await commit_empty_group(tc.settings, tc.group, offsets)


def _num(value: str | None) -> float | None:
    assert value is not None, "missing data-value hook"
    return None if value == "" else float(value)


def assert_dom_matches_api(dom: dict[str, Any], api: dict[str, Any], tc: TestCatalogue,
                           expected: dict[TopicPartition, int]) -> None:
    group = next(g for g in api["groups"] if g["group"] == tc.group)
    assert dom["status"] == dom["card_status"] == group["status"]
    assert _num(dom["members"]) == group["members"]
    assert _num(dom["lag_records"]) == group["lag_records"]
    assert _num(dom["expired_records"]) == group["expired_records"]
    assert abs(_num(dom["lag_seconds"]) - group["lag_seconds"]) <= 2
    overview = dom["overview"]  # the group's overview row says the same
    assert overview["status"] == group["status"]
    for f in ("members", "lag_records", "expired_records"):
        assert _num(overview[f]) == group[f], f
    assert _num(overview["partitions"]) == len(group["partitions"])
    assert abs(_num(overview["lag_seconds"]) - group["lag_seconds"]) <= 2
    api_rows = {(p["topic"], p["partition"]): p for p in group["partitions"]}
    dom_rows = {(r["topic"], int(r["partition"])): r for r in dom["rows"]}
    assert set(dom_rows) == set(api_rows) == {(tp.topic, tp.partition) for tp in expected}
    for key, p in api_rows.items():
        row = dom_rows[key]
        values, texts = row["values"], row["texts"]
        assert values["topic"] == texts["topic"] == p["topic"]
        assert p["committed_offset"] == expected[TopicPartition(*key)], key
        for f in INT_FIELDS:
            assert values[f] == str(p[f]), (key, f, values[f], p[f])
            # what a person reads is the same number, only with thousands separators
            assert int(texts[f].replace(",", "")) == p[f], (key, f, texts[f])
        if p["lag_seconds"] is None:
            assert values["lag_seconds"] == ""
        else:
            assert abs(float(values["lag_seconds"]) - p["lag_seconds"]) <= 2, key
        assert values["status"] == texts["status"] == p["status"], key
    for topic, count in api["dlq_records"].items():
        if topic.startswith(tc.topic):
            assert _num(dom["dlq"].get(topic)) == count, topic


async def read_fresh(page: Any, base: str, tc: TestCatalogue) -> tuple[dict[str, Any],
                                                                      dict[str, Any]]:
    """The DOM right after the page's next refresh, and /api/lag fetched at once after."""
    before = await page.evaluate(READ_DOM, tc.group)
    await page.wait_for_function(
        """(prev) => { const n = document.querySelector('#totals [data-field="generated_at"]');
                       return n && n.dataset.value !== prev; }""",
        arg=before["generated_at"], timeout=15_000)
    dom = await page.evaluate(READ_DOM, tc.group)
    api = await get_json(f"{base}/api/lag")
    return dom, api


async def report_worker(tc: TestCatalogue) -> str:
    """A heartbeat row as a live worker writes it (the worker path is tested elsewhere)."""
    worker_id = f"dash-{tc.suffix}"
    async with pg(tc.settings) as conn:
        await conn.execute(UPSERT, worker_id, tc.group, "host", 4242,
                           "http://127.0.0.1:9/metrics", "ok", 4, 1300, 1234, 0)
    return worker_id


async def test_dashboard_shows_the_api_numbers(catalogue_factory: Any) -> None:
    async_playwright = _require_browser()
    tc: TestCatalogue = await catalogue_factory(partitions=PARTITIONS)
    await publish(tc, 400, seed=11)
    ends = await end_offsets(tc.settings, [tc.topic])
    assert sum(ends.values()) == 400
    half = {tp: end // 2 for tp, end in ends.items()}
    await commit_offsets(tc, half)
    assert any(ends[tp] > off for tp, off in half.items())
    worker_id = await report_worker(tc)

    exporter = LagExporter(tc.settings, interval=0.5, groups=[tc.group])
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(exporter.run("127.0.0.1", 0, on_bound=bound.set_result))
    try:
        port = await asyncio.wait_for(bound, 30)
        base = f"http://127.0.0.1:{port}"

        async def has_group() -> bool:
            body = await get_json(f"{base}/api/lag")
            return any(g["group"] == tc.group and len(g["partitions"]) == len(ends)
                       for g in body.get("groups", []))

        await async_wait_for(has_group, 60, f"/api/lag to report group {tc.group}")

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                               headless=True)
            try:
                context = await browser.new_context(viewport={"width": 1280, "height": 900},
                                                    service_workers="block")
                outside: list[str] = []
                requested: list[str] = []

                async def guard(route: Any) -> None:
                    if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
                        await route.continue_()
                    else:  # never let it out; fail below
                        outside.append(route.request.url)
                        await route.abort()

                await context.route("**/*", guard)
                page = await context.new_page()
                errors: list[str] = []
                page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
                        if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
                page.on("requestfailed", lambda r: errors.append(
                    f"request failed: {r.url} ({r.failure})"))
                page.on("request", lambda r: requested.append(r.url))

                await page.goto(f"{base}/")
                row = page.locator(f'#overview tr[data-group="{tc.group}"]')
                await row.wait_for(timeout=20_000)
                card = page.locator(f'article[data-group="{tc.group}"]')
                assert await card.count() == 0  # cards on demand: closed until asked for
                await row.click()
                await card.wait_for(timeout=20_000)
                assert await row.get_attribute("aria-expanded") == "true"
                assert page.url.endswith("#open=" + tc.group)
                await page.wait_for_function(
                    """([g, n]) => document.querySelectorAll(
                         'article[data-group="' + CSS.escape(g) + '"] tr[data-topic]'
                       ).length === n""", arg=[tc.group, len(ends)], timeout=20_000)

                dom, api = await read_fresh(page, base, tc)
                assert_dom_matches_api(dom, api, tc, half)
                assert dom["status"] == "OK"
                worker_row = page.locator(f'#workers tr[data-worker="{worker_id}"]')
                await worker_row.wait_for(timeout=20_000)
                assert await worker_row.locator('[data-field="state"]').inner_text() == "ok"
                assert await worker_row.locator('[data-field="stored"]').get_attribute(
                    "data-value") == "1234"
                assert await card.locator('svg[data-points]').count() == 2

                # a replay: offsets go back → REWIND badge and a marker on both charts
                quarter = {tp: end // 4 for tp, end in ends.items()}
                await commit_offsets(tc, quarter)
                rewind = card.locator('svg [data-marker][data-to="REWIND"]')
                await page.wait_for_function(
                    """(g) => { const c = document.querySelector(
                                  'article[data-group="' + CSS.escape(g) + '"]');
                                return c && c.dataset.status === 'REWIND'
                                  && c.querySelectorAll('[data-marker][data-to="REWIND"]')
                                       .length === 2; }""",
                    arg=tc.group, timeout=20_000)
                assert await rewind.count() == 2
                await page.wait_for_function(  # the history shows lag after the rewind
                    "(g) => Number(document.querySelector('article[data-group=\"' + CSS.escape(g)"
                    " + '\"] svg[data-points]').dataset.points) >= 6", arg=tc.group,
                    timeout=20_000)
                dom, api = await read_fresh(page, base, tc)
                assert_dom_matches_api(dom, api, tc, quarter)
                assert dom["status"] == "REWIND"
                events = await page.locator(
                    f'#events li[data-event-group="{tc.group}"][data-to="REWIND"]').count()
                assert events >= 1

                os.makedirs(SCREENSHOT.parent, exist_ok=True)
                png = await page.screenshot(path=str(SCREENSHOT), full_page=True)
                assert len(png) > 10_000
                assert not errors, errors
                assert not outside, f"requests to non-local hosts: {outside}"
                assert requested and all(urlsplit(u).hostname in LOCAL_HOSTS
                                         for u in requested), requested
                assert any("/api/history?group=" in u for u in requested)
                assert any(u.endswith("/api/events") for u in requested)
            finally:
                await browser.close()
    finally:
        exporter.stop()
        await asyncio.wait_for(task, 30)


HOSTILE_URLS = ("javascript:document.title='pwned'", " JaVaScRiPt:alert(1)",
                "data:text/html,<script>alert(1)</script>", "//evil.example/metrics",
                "vbscript:msgbox(1)")


async def test_dashboard_links_only_http_metrics_urls(catalogue_factory: Any) -> None:
    """A metrics_url planted in sinkfleet.workers (anyone who can write the table) is shown
    as text unless it is an absolute http(s) URL; clicking it does nothing. The exporter
    wants a token here: the browser sends it as HTTP Basic, as a person would type it."""
    async_playwright = _require_browser()
    tc: TestCatalogue = await catalogue_factory(partitions=1)
    rows = {f"evil{i}-{tc.suffix}": url for i, url in enumerate(HOSTILE_URLS)}
    rows[f"good-{tc.suffix}"] = "https://10.0.0.7:9300/metrics"
    async with pg(tc.settings) as conn:
        for worker_id, url in rows.items():
            await conn.execute(UPSERT, worker_id, tc.group, "host", 4242, url, "ok", 1, 1, 1, 0)
    token = "dashboard-token"
    settings = tc.settings.model_copy(update={"exporter_token": SecretStr(token)})
    exporter = LagExporter(settings, interval=0.5, groups=[tc.group])
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(exporter.run("127.0.0.1", 0, on_bound=bound.set_result))
    try:
        base = f"http://127.0.0.1:{await asyncio.wait_for(bound, 30)}"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                               headless=True)
            try:
                page = await browser.new_page(
                    http_credentials={"username": "me", "password": token})
                dialogs: list[str] = []
                page.on("dialog", lambda d: (dialogs.append(d.message),
                                             asyncio.ensure_future(d.dismiss())))
                await page.goto(f"{base}/")
                await page.wait_for_function(
                    "(n) => document.querySelectorAll('#workers tr[data-worker]').length === n",
                    arg=len(rows), timeout=20_000)
                title = await page.title()
                for worker_id, url in rows.items():
                    cell = page.locator(f'#workers tr[data-worker="{worker_id}"] td').last
                    links = cell.locator("a")
                    if worker_id.startswith("good"):
                        assert await links.count() == 1
                        assert await links.get_attribute("href") == url
                        continue
                    assert await links.count() == 0, url
                    assert await cell.inner_text() == url.strip()
                    await cell.click()
                    await page.wait_for_timeout(200)
                    assert page.url == f"{base}/"
                    assert await page.title() == title
                assert await page.locator("#workers a[href]").count() == 1
                assert dialogs == []
            finally:
                await browser.close()
    finally:
        exporter.stop()
        await asyncio.wait_for(task, 30)


def many_groups(at: float, groups: int = 500, partitions: int = 12) -> Snapshot:
    """A snapshot of ``groups`` groups x ``partitions``: most OK, some lagging, stalled,
    rewound or with expired records, in every order of name."""
    out = []
    for i in range(groups):
        name = f"load-{(i * 7919) % groups:03d}"  # names not in rank order
        g = GroupLag(name, "Stable" if i % 5 else "Empty", i % 4)
        for p in range(partitions):
            end = 1_000 + 37 * i + p
            committed = end - (i % 9) * (p + 1) * 3
            start = committed + 5 if i % 61 == 0 and p == 0 else 0  # expired records
            ts = at - (i % 13) * 4.5 - p if committed < end else None
            status = ("ERROR" if start > committed else "STALL" if i % 47 == 0 else
                      "REWIND" if i % 53 == 0 else "WARN" if i % 11 == 0 and p == 3 else "OK")
            g.partitions.append(PartitionLag(f"t{i % 7}", p, Sample(at, committed, start, end,
                                                                    ts), status))
        g.status = worst([q.status for q in g.partitions])
        out.append(g)
    out.sort(key=lambda g: g.group)  # the API's order
    return Snapshot(at, out, {"t0.dlq": 3}, 0.25)


def worst_first(groups: list[dict[str, Any]]) -> list[str]:
    """The overview's order: status, age of the oldest waiting record, records, name."""
    rank = {s: i for i, s in enumerate(STATUSES)}
    return [g["group"] for g in sorted(groups, key=lambda g: (
        -rank[g["status"]], -(g["lag_seconds"] if g["lag_seconds"] is not None else -1),
        -(g["lag_records"] or 0), g["group"]))]


async def test_dashboard_overview_of_500_groups(stack: Settings) -> None:
    """500 groups x 12 partitions: one overview row per group, worst first, numbers equal
    to the API's; the name filter and the "not OK" switch show exactly the matching
    groups; a row opens that group's card, and only its history is fetched. The time to
    the first full overview and to a filter are written to tests/artifacts."""
    async_playwright = _require_browser()
    exporter = LagExporter(stack, groups=["none"])
    exporter.snapshot = many_groups(time.time())
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = await serve("127.0.0.1", 0, exporter.handle, bound.set_result,
                         guard=Guard.of((), "127.0.0.1"))
    try:
        base = f"http://127.0.0.1:{await asyncio.wait_for(bound, 10)}"
        api = await get_json(f"{base}/api/lag")
        assert len(api["groups"]) == 500
        expected = worst_first(api["groups"])
        by_name = {g["group"]: g for g in api["groups"]}
        assert by_name[expected[0]]["status"] == "ERROR"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                               headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
                requested: list[str] = []
                page.on("request", lambda r: requested.append(r.url))
                await page.goto(f"{base}/")
                await page.wait_for_function(
                    "() => document.querySelectorAll('#overview tbody tr').length === 500",
                    polling="raf", timeout=30_000)
                first_ms = await page.evaluate("performance.now()")
                rows = await page.evaluate("""() => [...document.querySelectorAll(
                    '#overview tbody tr')].map(tr => {
                      const v = f => tr.querySelector('[data-field="' + f + '"]').dataset.value;
                      return {group: tr.dataset.group, status: v('status'),
                              lag_records: v('lag_records'), lag_seconds: v('lag_seconds'),
                              expired_records: v('expired_records'),
                              partitions: v('partitions'), members: v('members')}; })""")
                assert [r["group"] for r in rows] == expected
                for r in rows:
                    g = by_name[r["group"]]
                    assert r["status"] == g["status"]
                    assert int(r["lag_records"]) == g["lag_records"]
                    assert int(r["expired_records"]) == g["expired_records"]
                    assert int(r["partitions"]) == 12 and int(r["members"]) == g["members"]
                    if g["lag_seconds"] is None:
                        assert r["lag_seconds"] == ""
                    else:
                        assert abs(float(r["lag_seconds"]) - g["lag_seconds"]) < 1e-6
                assert await page.locator("article[data-group]").count() == 0
                assert not [u for u in requested if "/api/history" in u]

                visible = "() => [...document.querySelectorAll('#overview tbody tr')]" \
                          ".filter(tr => !tr.hidden).map(tr => tr.dataset.group)"
                started = await page.evaluate("performance.now()")
                await page.fill("#filter", "load-04")
                shown = await page.evaluate(visible)
                filter_ms = await page.evaluate("performance.now()") - started
                assert shown == [n for n in expected if "load-04" in n] and len(shown) == 10
                await page.fill("#filter", "")
                await page.check("#trouble-only")
                assert await page.evaluate(visible) == [
                    n for n in expected if by_name[n]["status"] != "OK"]
                shown_text = await page.locator('.toolbar [data-field="shown"]').inner_text()
                trouble = sum(g["status"] != "OK" for g in api["groups"])
                assert shown_text == f"{trouble} of 500 groups"
                assert 0 < trouble < 500

                worst_group = expected[0]
                await page.locator(f'#overview tr[data-group="{worst_group}"]').click()
                card = page.locator(f'article[data-group="{worst_group}"]')
                await card.wait_for(timeout=10_000)
                assert await card.locator("tr[data-topic]").count() == 12
                await page.wait_for_timeout(2500)  # one more poll: still only this history
                history = {u.split("group=", 1)[1] for u in requested if "/api/history" in u}
                assert history == {worst_group}

                await page.uncheck("#trouble-only")
                await page.evaluate("window.scrollTo(0, 0)")
                os.makedirs(SCREENSHOT.parent, exist_ok=True)
                await page.screenshot(path=str(SCREENSHOT.with_name("dashboard-500.png")),
                                      full_page=True)
                timings = {"groups": 500, "partitions_each": 12,
                           "first_overview_ms": round(first_ms, 1),
                           "filter_ms": round(filter_ms, 1)}
                SCREENSHOT.with_name("dashboard-500.json").write_text(json.dumps(timings))
                print("dashboard at 500 groups x 12 partitions:", timings)
                assert not errors, errors
            finally:
                await browser.close()
    finally:
        server.close()
