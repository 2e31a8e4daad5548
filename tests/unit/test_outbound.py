"""The webhook destination policy: every spelling of an internal address is refused by default, opened
ranges pass, DNS rebinding cannot slip through, and delivery failures are categories, not raw errors."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from atelier.core.config import Settings
from atelier.webhooks.outbound import RefusedDestination, check_destination, post_webhook, redact_url
from tests.receivers import header_drip

DEFAULT = Settings()
OPEN = Settings(webhook_allow_networks="127.0.0.0/8,::1/128")

INTERNAL = [
    "http://127.0.0.1:8333/",
    "http://[::1]:6379/",
    "http://0x7f000001/",  # hex
    "http://2130706433/",  # decimal
    "http://017700000001/",  # octal
    "http://127.1/",  # short form
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
    "http://[::ffff:7f00:1]/",
    "http://localhost:5432/",  # a name that resolves to loopback
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "http://10.0.0.5/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # shared address space
    "http://224.0.0.1/",  # multicast
    "http://0.0.0.0/",
    "http://240.0.0.1/",  # reserved
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fec0::1]/",  # site-local (deprecated, still routed in places; `is_global` says True)
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
]


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_addresses_are_refused_by_default(url):
    with pytest.raises(RefusedDestination, match="refused by policy|resolves to"):
        check_destination(url, DEFAULT)


LOOPBACK = INTERNAL[:9]  # every spelling of the stack's own host above


@pytest.mark.parametrize("url", LOOPBACK)
def test_loopback_passes_when_its_range_is_opened(url):
    dest = check_destination(url, OPEN)
    assert dest.address in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "::ffff:7f00:1")


def test_a_public_address_passes_and_the_checked_address_is_the_one_dialled():
    dest = check_destination(
        "https://hooks.example.com/x?token=1", DEFAULT, resolve=lambda h, p: ["93.184.216.34"]
    )
    assert (dest.address, dest.host, dest.port, dest.path) == (
        "93.184.216.34",
        "hooks.example.com",
        443,
        "/x?token=1",
    )


def test_a_name_with_any_internal_address_is_refused_whole():
    with pytest.raises(RefusedDestination, match="loopback"):
        check_destination(
            "http://mixed.example/", DEFAULT, resolve=lambda h, p: ["93.184.216.34", "127.0.0.1"]
        )


PRODUCTION = Settings(
    env="production",
    s3_secret_key="x",
    webhook_secret="y",
    broker_url="redis://:pw@redis:6379/0",
    s3_public_endpoint_url="https://s3.example.com",
    metrics_token="t",
    ui_session_secret="u" * 32,
)


@pytest.mark.parametrize(
    ("url", "settings", "reason"),
    [
        ("ftp://example.com/", DEFAULT, "http or https"),
        ("http://user:pw@example.com/", DEFAULT, "user name or password"),
        ("http://example.com/", PRODUCTION, "https"),
    ],
)
def test_scheme_rules(url, settings, reason):
    with pytest.raises(RefusedDestination, match=reason):
        check_destination(url, settings, resolve=lambda h, p: ["93.184.216.34"])


def test_a_bad_allow_list_is_refused_when_settings_load():
    with pytest.raises(ValueError, match="ATELIER_WEBHOOK_ALLOW_NETWORKS"):
        Settings(webhook_allow_networks="127.0.0.0/8,not-a-network")


class Hook(BaseHTTPRequestHandler):
    seen: list[dict] = []
    status = 204
    delay = 0.0

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        Hook.seen.append(dict(self.headers))
        time.sleep(Hook.delay)
        self.send_response(Hook.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver():
    Hook.seen, Hook.status, Hook.delay = [], 204, 0.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_delivery_to_loopback_is_refused_by_default_and_nothing_is_sent(receiver):
    for url in (
        f"http://127.0.0.1:{receiver}/h",
        f"http://localhost:{receiver}/h",
        f"http://0x7f000001:{receiver}/",
    ):
        outcome = post_webhook(url, b"{}", {}, settings=DEFAULT, timeout=2)
        assert outcome.category == "refused_by_policy" and not outcome.retryable
    assert Hook.seen == []


def test_dns_rebinding_cannot_change_the_dialled_address(receiver):
    """The name is resolved once: a resolver that would answer differently the second time is never
    asked again, and the request goes to the checked address with the name in its Host header."""
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])
    calls = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    outcome = post_webhook(
        f"http://hooks.test:{receiver}/x", b"{}", {}, settings=OPEN, timeout=2, resolve=rebinding
    )
    assert outcome.delivered and calls == ["hooks.test"]
    assert Hook.seen[0]["Host"] == f"hooks.test:{receiver}"


def test_rebinding_to_loopback_is_refused_when_loopback_is_not_opened(receiver):
    outcome = post_webhook(
        f"http://attacker.test:{receiver}/", b"{}", {}, settings=DEFAULT, resolve=lambda h, p: ["127.0.0.1"]
    )
    assert outcome.category == "refused_by_policy" and Hook.seen == []


def test_failures_are_short_categories(receiver):
    Hook.status = 405
    assert post_webhook(f"http://127.0.0.1:{receiver}/", b"{}", {}, settings=OPEN).category == "http_405"
    Hook.status, Hook.delay = 204, 1.5
    timed_out = post_webhook(f"http://127.0.0.1:{receiver}/", b"{}", {}, settings=OPEN, timeout=0.3)
    assert (timed_out.category, timed_out.retryable) == ("timed_out", True)
    closed = post_webhook("http://127.0.0.1:9/", b"{}", {}, settings=OPEN, timeout=2)
    assert (closed.category, closed.retryable) == ("connection_failed", True)


def test_redacted_url_keeps_the_host_only():
    assert redact_url("https://u:p@hooks.example.com:8443/t/SECRET?k=v") == "https://hooks.example.com:8443/…"


class Flood(BaseHTTPRequestHandler):
    """A receiver that answers 200 and then an endless body, or one dripped slowly."""

    drip = 0.0
    sent = 0

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.end_headers()  # no length: the body ends when the connection does
        piece = b"x" * (1 if Flood.drip else 64 * 1024)
        try:
            while Flood.sent < 512 * 1024 * 1024:
                self.wfile.write(piece)
                Flood.sent += len(piece)
                if Flood.drip:
                    time.sleep(Flood.drip)
        except OSError:
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def flood():
    Flood.drip, Flood.sent = 0.0, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flood)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_an_endless_response_is_read_only_up_to_the_cap(flood):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcome = post_webhook(f"http://127.0.0.1:{flood}/", b"{}", {}, settings=OPEN, timeout=5)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert outcome.delivered
    assert grown_mb < 50, f"{grown_mb:.0f} MB"
    assert Flood.sent < 64 * 1024 * 1024  # the sender was cut off long before its 512 MB


def test_a_dripped_response_meets_the_total_deadline(flood):
    """One byte every 50 ms never trips a per-read timeout of 0.5 s; the attempt's total deadline ends it."""
    Flood.drip = 0.05
    outcome = post_webhook(f"http://127.0.0.1:{flood}/", b"{}", {}, settings=OPEN, timeout=0.5)
    assert (outcome.category, outcome.retryable) == ("timed_out", True)
    assert Flood.sent < OPEN.webhook_max_response_bytes


def test_dripped_headers_meet_the_total_deadline():
    """One header byte every 0.2 s never trips the per-read time-out of 1 s; the attempt's total deadline
    (ATELIER_WEBHOOK_TIMEOUT_SECONDS) ends it while the headers are still coming, and the outcome is a
    retryable time-out like any other."""
    with header_drip() as (port, sent):
        began = time.monotonic()
        outcome = post_webhook(f"http://127.0.0.1:{port}/", b"{}", {}, settings=OPEN, timeout=1.0)
        took = time.monotonic() - began
    assert (outcome.category, outcome.retryable) == ("timed_out", True)
    assert took < 1.0 + 5, f"{took:.1f} s"  # the receiver would have dripped for 10 s
    assert sent  # the headers were really being dripped when it gave up
