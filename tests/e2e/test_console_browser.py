"""Browser tests of the web console: Debian's headless Chromium driving the real console,
served by the real aggregation service, over a real Redis.

Where it sits: the last hop of the flow. Hits are injected into ``<prefix>:hits`` exactly as
processing writes them (msgpack batches under ``ENTRY_FIELD``); the real aggregation service
consumes them, groups them into attacks and serves the API and the console; the browser is
a user of that console. One node (and its data) is shared by the module's tests; each test
gets a fresh browser context.

The XSS test seeds an attack whose path, query, headers, host, rule id and fragment carry
markup payloads, and checks that they are shown as text: no script runs (alert/confirm/prompt
trap + Playwright's dialog event + CSP violation reports), no injected element exists, and the
payload text is visible. It runs twice: under the server's CSP and with CSP bypassed, so it
proves the DOM code itself is safe rather than leaning on the CSP.

Screenshots of the list and detail pages go to ``test-artifacts/`` (repo root).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis as redis_sync

from node.config import build_config
from node.queue.embedded import EmbeddedRedis
from node.queue.keys import ENTRY_FIELD, Keys
from node.records import hit_id

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "console-test-token-" + uuid.uuid4().hex
WAIT_S = 20.0  # upper bound of every wait (never an assertion on time)
UI_TIMEOUT_MS = 15000

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
JS_URL = "javascript:alert(1)"
ATTR = '" onmouseover="alert(1)'
SVG = "</textarea><svg onload=alert(1)>"
PAYLOADS = (SCRIPT, IMG, JS_URL, ATTR, SVG)


# ------------------------------------------------------------------ seeded traffic

@dataclass(frozen=True)
class Seed:
    """One attack to create: ``count`` hits of one class from one IP against one host."""

    name: str
    cls: str
    client_ip: str
    host: str
    path: str
    point: tuple[str, ...]
    fragment: str
    rule_id: str
    count: int
    status: int = 0
    query: str = ""
    extra: tuple[tuple[str, Any], ...] = ()


XSS_HOST = f'evil{ATTR}>{IMG}.example'
SEEDS = (
    Seed("sqli-shop", "sqli", "203.0.113.10", "shop.example", "/products", ("query", "id"),
         "' OR '1'='1", "sqli-tautology", 3, status=500, query="id=1%27%20OR%20%271%27=%271"),
    Seed("traversal", "path_traversal", "203.0.113.11", "shop.example",
         "/static/../../etc/passwd", ("path",), "../../etc/passwd", "path_traversal-dotdot", 2,
         status=404),
    Seed("sqli-api", "sqli", "203.0.113.12", "api.example", "/v1/users", ("json", "name"),
         "admin'--", "sqli-comment", 1),
    Seed("xss", "xss", "198.51.100.66", XSS_HOST, f"/{SCRIPT}/{IMG}/{JS_URL}",
         ("header", "user-agent"), f"{SVG}{ATTR}", f"xss-{IMG}", 2, status=200,
         query=f"next={JS_URL}&q={SCRIPT}",
         extra=(("url", JS_URL),
                ("headers", [["User-Agent", f"Mozilla {SVG}{ATTR}"], ["Referer", JS_URL],
                             ["X-Note", f"{SCRIPT}{IMG}"]]))),
)


# Older one-hit attacks from many scanners: with SEEDS they fill more than one page (50).
FLEET = tuple(Seed(f"fleet-{i}", "scanner", f"10.77.0.{i}", "shop.example", "/.env", ("path",),
                   "/.env", "scanner-dotenv", 1) for i in range(1, 56))
FLEET_AGE_S = 3600.0
PAGE_SIZE = 50  # the console's page size (app.js PAGE_SIZE)


def seed_hits(seed: Seed, now: float) -> list[dict[str, Any]]:
    hits = []
    for i in range(seed.count):
        record_id = f"{seed.name}-{i}-{uuid.uuid4().hex[:8]}"
        hit = {
            "id": hit_id(record_id, seed.rule_id, list(seed.point)), "record_id": record_id,
            "request_id": f"req-{record_id}", "ts": now - 60 + i, "client_ip": seed.client_ip,
            "host": seed.host, "application": "", "method": "GET", "path": seed.path,
            "class": seed.cls, "rule_id": seed.rule_id, "severity": "high", "score": 5,
            "point": list(seed.point), "fragment": seed.fragment, "source": "mirror",
            "response_status": seed.status,
        }
        if seed.query:
            hit["query"] = seed.query
        hit.update(dict(seed.extra))
        hits.append(hit)
    return hits


def inject_hits(url: str, keys: Keys, hits: list[dict[str, Any]]) -> None:
    """XADD the hits as processing does: one entry, one msgpack array of hits."""
    client = redis_sync.Redis.from_url(url)
    try:
        client.xadd(keys.hits, {ENTRY_FIELD: msgpack.packb(hits, use_bin_type=True)})
    finally:
        client.close()


# ------------------------------------------------------------------ the node under test

@dataclass(frozen=True)
class Node:
    base: str
    redis_url: str = ""
    keys: Keys = Keys()

    def api(self, method: str, path: str, body: Any = None, token: str = TOKEN) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read()
        return json.loads(text) if text else None

    def attacks(self, **query: str) -> list[dict[str, Any]]:
        qs = urllib.parse.urlencode({"limit": "1000", **query})
        return self.api("GET", f"/api/v1/attacks?{qs}")["items"]

    def attack_by_ip(self, ip: str) -> dict[str, Any]:
        (summary,) = self.attacks(client_ip=ip)
        return self.api("GET", f"/api/v1/attacks/{urllib.parse.quote(summary['id'], safe='')}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, urllib.error.URLError):
            pass  # not up yet
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def healthy(base: str) -> bool:
    with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
        return resp.status == 200


class ServiceThread:
    """The real aggregation role (``node.aggregation.service.serve``) in its own event loop."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="aggregation", daemon=True)

    def _run(self) -> None:
        from node.aggregation.service import serve

        async def main() -> None:
            self.stop = asyncio.Event()
            await serve(self.cfg, self.stop)

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # reported by the fixture, the thread must not die silently
            self.error = exc
        finally:
            self.loop.close()

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        if self.stop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "aggregation service did not stop"


@pytest.fixture(scope="module")
def node(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    port = free_port()
    cfg = build_config(None, env={}, overrides={
        "redis.url": redis_server.url, "redis.prefix": prefix,
        "data_dir": str(tmp_path_factory.mktemp("console-node")),
        "aggregation.console_listen": f"127.0.0.1:{port}", "aggregation.api_token": TOKEN,
    })
    service = ServiceThread(cfg)
    service.start()
    node = Node(f"http://127.0.0.1:{port}")
    try:
        wait_for(lambda: service.error is None and healthy(node.base), "the aggregation listener")
        now = time.time()
        inject_hits(redis_server.url, Keys(prefix),
                    [h for s in FLEET for h in seed_hits(s, now - FLEET_AGE_S)]
                    + [h for s in SEEDS for h in seed_hits(s, now)])
        wait_for(lambda: len(node.attacks()) >= len(SEEDS) + len(FLEET), "the seeded attacks")
        yield replace(node, redis_url=redis_server.url, keys=Keys(prefix))
    finally:
        service.close()
        _drop_keys(redis_server.url, prefix)
    if service.error is not None:
        raise service.error


def _drop_keys(url: str, prefix: str) -> None:
    client = redis_sync.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# ------------------------------------------------------------------ the browser

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is required (scripts/test.sh installs it: "
                    "apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


# Installed before any page script: every way the payloads could run leaves a trace here.
TRAPS = """
(() => {
  const seen = [];
  Object.defineProperty(window, "__xss", { value: seen });
  for (const name of ["alert", "confirm", "prompt", "print"]) {
    const original = window[name].bind(window);
    window[name] = (...args) => {
      seen.push(name + ":" + String(args[0]));
      return original(...args);
    };
  }
  for (const name of ["log", "info", "warn", "error", "debug"]) {
    const original = console[name].bind(console);
    console[name] = (...args) => { seen.push("console." + name + ":" + args.map(String).join(" "));
                                    return original(...args); };
  }
  document.addEventListener("securitypolicyviolation",
    (e) => seen.push("csp:" + e.violatedDirective + ":" + e.sample), true);
})();
"""


@dataclass
class Session:
    page: Any
    dialogs: list[str]
    errors: list[str]

    def xss_traces(self) -> list[str]:
        return list(self.page.evaluate("window.__xss"))


@pytest.fixture
def make_session(browser: Any, node: Node) -> Iterator[Callable[..., Session]]:
    """Fresh browser contexts with the traps installed; closed after the test."""
    contexts: list[Any] = []

    def make(*, bypass_csp: bool = False) -> Session:
        context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                      bypass_csp=bypass_csp)
        contexts.append(context)
        context.add_init_script(TRAPS)
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        session = Session(page, [], [])
        page.on("dialog", lambda d: (session.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: session.errors.append(str(e)))
        return session

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def ui(make_session: Callable[..., Session], node: Node) -> Iterator[Session]:
    """A signed-in console page under the server's CSP; the console must not raise."""
    session = make_session()
    sign_in(session.page, node)
    yield session
    assert session.errors == [], f"console raised: {session.errors}"


def sign_in(page: Any, node: Node, token: str = TOKEN) -> None:
    page.goto(node.base + "/")
    page.fill("#token", token)
    page.click("form[data-login] button[type=submit]")


def row_ips(page: Any) -> list[str]:
    page.wait_for_selector("table[data-attacks] tbody tr")
    return page.eval_on_selector_all(
        "table[data-attacks] tbody tr", "rows => rows.map(r => r.cells[2].textContent)")


def row_classes(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "table[data-attacks] tbody tr .badge[title]", "els => els.map(e => e.title)")


def screenshot(page: Any, name: str, *, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page)


def open_detail(page: Any, ip: str) -> None:
    page.click(f"table[data-attacks] tbody tr:has(td:text-is('{ip}')) a")
    page.wait_for_selector("[data-detail] [data-hits] article.hit")


# ------------------------------------------------------------------ tests

def test_index_is_served_with_a_strict_csp(node: Node) -> None:
    with urllib.request.urlopen(node.base + "/", timeout=5) as resp:
        csp = resp.headers.get("Content-Security-Policy", "")
        body = resp.read().decode()
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives.get("script-src") == ["'self'"], csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert '<script type="module" src="/console/app.js"></script>' in body


def test_wrong_token_is_refused_and_nothing_is_shown(ui: Session, node: Node) -> None:
    page = ui.page
    page.click("#sign-out")
    sign_in(page, node, token="not-the-token")
    page.wait_for_selector("form[data-login] .form-error:text('refused')")
    assert page.query_selector("table[data-attacks]") is None
    assert page.evaluate("sessionStorage.getItem('oob-node.api-token')") is None


def test_list_shows_the_attacks_and_pages_with_more(ui: Session, node: Node) -> None:
    page = ui.page
    everything = [a["client_ip"] for a in node.attacks()]  # newest first
    assert len(everything) > PAGE_SIZE
    assert row_ips(page) == everything[:PAGE_SIZE]
    assert {s.client_ip for s in SEEDS} <= set(row_ips(page))  # the newest come first
    page.wait_for_selector("svg[data-chart] rect.seg")  # the timeline drew the seeded hits
    screenshot(page, "console-list.png", full_page=False)
    for _ in range(len(everything) // PAGE_SIZE + 1):  # "Load more" until the cursor ends
        if page.query_selector("[data-more]") is None:
            break
        shown = len(row_ips(page))
        page.click("[data-more]")
        page.wait_for_function("n => document.querySelectorAll('table[data-attacks] tbody tr')"
                               ".length > n", arg=shown)
    page.wait_for_selector("[data-more]", state="detached")
    assert row_ips(page) == everything


def test_live_refresh_shows_new_attacks(ui: Session, node: Node) -> None:
    page = ui.page
    row_ips(page)
    assert page.get_attribute("[data-live]", "aria-pressed") == "true"
    fresh = Seed("live", "ssrf", "192.0.2.99", "shop.example", "/fetch", ("query", "url"),
                 "http://169.254.169.254/", "ssrf-metadata", 1)
    inject_hits(node.redis_url, node.keys, seed_hits(fresh, time.time()))
    # No reload, no click: the next poll (every 5 s) brings the new attack in.
    page.wait_for_selector(f"table[data-attacks] tbody tr:has(td:text-is('{fresh.client_ip}'))")
    page.click("[data-live]")
    assert page.get_attribute("[data-live]", "aria-pressed") == "false"
    assert page.evaluate("sessionStorage.getItem('oob-node.live-paused')") == "1"


def test_detail_page_shows_the_attack(ui: Session, node: Node) -> None:
    page = ui.page
    seed = SEEDS[0]
    attack = node.attack_by_ip(seed.client_ip)
    row_ips(page)
    open_detail(page, seed.client_ip)
    assert page.url.endswith("#/attacks/" + urllib.parse.quote(attack["id"], safe=""))
    facts = page.inner_text("dl.facts")
    for value in (seed.client_ip, seed.host, seed.rule_id, str(attack["hits"])):
        assert value in facts
    marks = page.eval_on_selector_all("[data-hits] .reqline mark", "m => m.map(e => e.textContent)")
    assert marks and all(m.lower() == seed.fragment.lower() for m in marks)
    assert page.locator("[data-hits] article.hit").count() == len(attack["sample_hits"])
    screenshot(page, "console-detail.png")


@pytest.mark.parametrize(("field", "value"), [
    ("class", "sqli"), ("client_ip", "203.0.113.11"), ("host", "api.example"),
])
def test_filters_narrow_the_list(ui: Session, node: Node, field: str, value: str) -> None:
    page = ui.page
    row_ips(page)
    if field == "class":
        page.select_option("#f-class", value)
    else:
        page.fill("#f-ip" if field == "client_ip" else "#f-host", value)
    page.click("form[data-filters] button[type=submit]")
    page.wait_for_url(f"**{field}={value}**")
    expected = sorted(a["client_ip"] for a in node.attacks(**{field: value}))
    assert expected and len(expected) < len(node.attacks())  # the filter really narrows
    page.wait_for_function("n => document.querySelectorAll('table[data-attacks] tbody tr')"
                           ".length === n", arg=len(expected))
    assert sorted(row_ips(page)) == expected
    if field == "class":
        assert set(row_classes(page)) == {value}


def test_mark_as_false_positive_creates_an_exclusion(ui: Session, node: Node) -> None:
    page = ui.page
    seed = SEEDS[1]
    row_ips(page)
    open_detail(page, seed.client_ip)
    page.click("[data-hits] article.hit [data-fp] >> nth=0")
    dialog = page.wait_for_selector("dialog[open]")
    assert "false positive" in dialog.inner_text().lower()
    assert ui.dialogs == []  # an in-page dialog, not window.confirm
    page.fill("dialog[open] input[name=comment]", "static files are served raw")
    page.click("dialog[open] [data-confirm]")
    page.wait_for_selector("dialog[open]", state="detached")

    def created() -> bool:
        return any(x.get("comment") == "static files are served raw"
                   for x in node.api("GET", "/api/v1/exclusions")["items"])

    wait_for(created, "the exclusion")
    (made,) = [x for x in node.api("GET", "/api/v1/exclusions")["items"]
               if x.get("comment") == "static files are served raw"]
    assert made["class"] == seed.cls and made["rule_id"] == seed.rule_id
    assert made["point"] == list(seed.point) and made["host"] == seed.host
    page.click("#nav a[data-nav=exclusions]")
    page.wait_for_selector(f"table[data-exclusions] tr[data-exclusion-id='{made['id']}']")
    screenshot(page, "console-exclusions.png")


def injected_elements(page: Any) -> dict[str, int]:
    """Elements the payloads would create if any of them were parsed as HTML."""
    return page.evaluate("""() => ({
      img: document.querySelectorAll('img').length,
      svg_not_chart: document.querySelectorAll('svg:not([data-chart])').length,
      foreign_script: [...document.scripts].filter(
        s => s.getAttribute('src') !== '/console/app.js').length,
      on_attributes: [...document.querySelectorAll('*')].filter(
        e => [...e.attributes].some(a => a.name.toLowerCase().startsWith('on'))).length,
      textarea: document.querySelectorAll('textarea').length,
      external_links: [...document.querySelectorAll('[href]')].filter(
        e => !(e.getAttribute('href').startsWith('#/')
               || e.getAttribute('href') === '/console/app.css')).length,
    })""")


def assert_nothing_ran(session: Session, *, hover: bool = True) -> None:
    """No dialog, no trapped call or CSP violation, no element made from the payloads."""
    page = session.page
    for selector in ("table[data-attacks] tr:has-text('alert(1)') td", "[data-hits] .reqline",
                     "dl.facts dd", "details[open].headers td"):
        for cell in page.query_selector_all(selector) if hover else []:
            cell.hover()  # an injected onmouseover would fire here
    assert session.dialogs == [], f"a dialog opened: {session.dialogs}"
    assert session.xss_traces() == [], f"script ran or tried to run: {session.xss_traces()}"
    assert all(n == 0 for n in injected_elements(page).values()), injected_elements(page)


def assert_payloads_inert(session: Session) -> None:
    assert_nothing_ran(session, hover=False)  # a modal dialog is open: the page is inert
    text = session.page.inner_text("body")
    for payload in PAYLOADS:
        assert payload in text, f"payload not visible as text: {payload}"


@pytest.mark.parametrize("bypass_csp", [False, True], ids=["with-csp", "csp-bypassed"])
def test_xss_payloads_are_shown_as_text(make_session: Callable[..., Session], node: Node,
                                        bypass_csp: bool) -> None:
    session = make_session(bypass_csp=bypass_csp)
    page = session.page
    sign_in(page, node)
    xss = next(s for s in SEEDS if s.cls == "xss")
    row_ips(page)
    assert_nothing_ran(session)
    assert XSS_HOST in page.inner_text("table[data-attacks]")
    open_detail(page, xss.client_ip)
    page.click("details.headers summary >> nth=0")
    assert_nothing_ran(session)
    if not bypass_csp:
        screenshot(page, "console-detail-xss.png")
    page.click("[data-hits] article.hit [data-fp] >> nth=0")  # the payload inside a dialog too
    page.wait_for_selector("dialog[open]")
    assert_payloads_inert(session)
    page.click("dialog[open] [data-confirm]")
    page.wait_for_selector("dialog[open]", state="detached")
    page.click("#nav a[data-nav=exclusions]")
    page.wait_for_selector("table[data-exclusions] tbody tr")
    assert XSS_HOST in page.inner_text("table[data-exclusions]")
    assert session.errors == [], f"console raised: {session.errors}"
    assert session.dialogs == [] and session.xss_traces() == []
    assert all(n == 0 for n in injected_elements(page).values()), injected_elements(page)
