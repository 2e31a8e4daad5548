"""Outbound HTTP (webhooks): a destination policy checked on the address that is really dialled.

    url ── parse (http/https; https only in production) ── resolve the host ONCE ── check every address
        └─ dial the checked address itself (Host header and TLS SNI keep the name) ── category

Resolving once and dialling the very address that passed the check is what defeats DNS rebinding (a
name that answers a public address to the check and 127.0.0.1 to the connect) and the many spellings
of one address (`0x7f000001`, `2130706433`, `[::ffff:127.0.0.1]`): the resolver turns every spelling
into an address and the check sees only addresses. Loopback, private, link-local, multicast, reserved
and every other non-global range are refused unless `ATELIER_WEBHOOK_ALLOW_NETWORKS` names them.

A delivery's outcome is a short category (`refused_by_policy`, `timed_out`, `connection_failed`,
`tls_error`, `http_503`...), never the raw network error: job events are readable by other keys and
raw errors ("connection refused" against "HTTP 405") would make the webhook a port scanner.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from atelier.core.config import Settings
from atelier.webhooks.deadline import DeadlineTransport

Resolver = Callable[[str, int], Sequence[str]]

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedDestination(ValueError):
    """The reason names the rule; it is safe to show the submitter (it says nothing about the network)."""


@dataclass(frozen=True)
class Destination:
    url: str  # as given
    scheme: str
    host: str  # the name, for the Host header and TLS SNI
    port: int
    address: str  # the checked address that will be dialled
    path: str  # path and query


@dataclass(frozen=True)
class Outcome:
    category: str  # delivered / refused_by_policy / timed_out / connection_failed / tls_error / http_NNN
    status_code: int | None = None
    retryable: bool = False

    @property
    def delivered(self) -> bool:
        return self.category == "delivered"


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


def allowed_networks(settings: Settings) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    items = settings.webhook_allow_networks.split(",")
    return [ipaddress.ip_network(n.strip(), strict=False) for n in items if n.strip()]


def _refusal(address: IPAddress) -> str | None:
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return _refusal(mapped)
    for attr, what in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
        # fec0::/10, deprecated (RFC 3879) but still routed inside some networks, and `is_global`
        # says True of it
        ("is_site_local", "site-local"),
    ):
        if getattr(address, attr, False):  # is_site_local exists for IPv6 only
            return what
    if not address.is_global:  # shared address space (100.64/10), documentation ranges...
        return "non-public"
    return None


def check_address(address: str, settings: Settings) -> None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    # an IPv4-mapped IPv6 address is the IPv4 address it maps, for the allow list too
    plain = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    if any(plain in net or ip in net for net in allowed_networks(settings)):
        return
    what = _refusal(ip)
    if what:
        raise RefusedDestination(
            f"webhook_url resolves to a {what} address, refused by policy "
            "(ATELIER_WEBHOOK_ALLOW_NETWORKS opens named ranges)"
        )


def check_destination(url: str, settings: Settings, *, resolve: Resolver | None = None) -> Destination:
    """The destination to dial, or RefusedDestination naming the rule. Every address the name resolves
    to must pass: a name with one public and one private address is refused as a whole."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise RefusedDestination("webhook_url must be an http or https URL")
    if settings.env == "production" and scheme != "https":
        raise RefusedDestination("webhook_url must use https (ATELIER_ENV=production)")
    if parts.username is not None or parts.password is not None:
        raise RefusedDestination("webhook_url must not carry a user name or password")
    host = parts.hostname
    if not host:
        raise RefusedDestination("webhook_url has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise RefusedDestination("webhook_url has an invalid port") from exc
    try:
        addresses = list((resolve or system_resolver)(host, port))
    except (OSError, UnicodeError) as exc:
        raise RefusedDestination("webhook_url host does not resolve") from exc
    if not addresses:
        raise RefusedDestination("webhook_url host does not resolve")
    for address in addresses:
        check_address(address, settings)
    path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    return Destination(url=url, scheme=scheme, host=host, port=port, address=addresses[0], path=path)


def _dial_url(dest: Destination) -> str:
    ip = ipaddress.ip_address(dest.address.split("%", 1)[0])
    netloc = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"{dest.scheme}://{netloc}:{dest.port}{dest.path}"


def _host_header(dest: Destination) -> str:
    default = 443 if dest.scheme == "https" else 80
    host = f"[{dest.host}]" if ":" in dest.host else dest.host
    return host if dest.port == default else f"{host}:{dest.port}"


def post_webhook(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    settings: Settings,
    timeout: float = 10.0,
    resolve: Resolver | None = None,
) -> Outcome:
    """POST once to a destination that passes the policy; redirects are not followed (a 3xx could
    point anywhere). Errors, time-outs, 408, 429 and 5xx are worth retrying; other 4xx are not.
    `timeout` bounds each network operation and the whole attempt: connect, request, status line,
    headers and body (atelier.webhooks.deadline), of which at most ATELIER_WEBHOOK_MAX_RESPONSE_BYTES
    are read."""
    try:
        dest = check_destination(url, settings, resolve=resolve)
    except RefusedDestination:
        return Outcome("refused_by_policy")
    sent = {**headers, "Host": _host_header(dest)}
    extensions = {"sni_hostname": dest.host} if dest.scheme == "https" else {}
    deadline = time.monotonic() + timeout
    try:
        with httpx.Client(
            timeout=timeout, follow_redirects=False, trust_env=False, transport=DeadlineTransport(deadline)
        ) as client:
            request = client.build_request("POST", _dial_url(dest), content=body, headers=sent)
            request.extensions.update(extensions)
            response = client.send(request, stream=True)
            try:
                _read_capped(response, settings.webhook_max_response_bytes, deadline)
            finally:
                response.close()
    except httpx.TimeoutException as exc:
        log.info("webhook to %s timed out: %s", redact_url(url), exc)
        return Outcome("timed_out", retryable=True)
    except httpx.ConnectError as exc:
        tls = "SSL" in type(exc.__cause__ or exc).__name__ or "certificate" in str(exc).lower()
        return Outcome("tls_error" if tls else "connection_failed", retryable=True)
    except httpx.HTTPError:
        return Outcome("connection_failed", retryable=True)
    code = response.status_code
    if 200 <= code < 300:
        return Outcome("delivered", status_code=code)
    return Outcome(f"http_{code}", status_code=code, retryable=code >= 500 or code in (408, 429))


def _read_capped(response: httpx.Response, cap: int, deadline: float) -> int:
    """Read at most `cap` bytes of the answer, before `deadline`: only its status matters, and a
    receiver must not feed a worker an endless body or one dripped a byte per timeout. Bytes read."""
    seen = 0
    for chunk in response.iter_raw():  # as the bytes arrive: a chunk_size would wait to fill it
        seen += len(chunk)
        if seen >= cap:
            break
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("webhook response past its total deadline", request=response.request)
    return seen


def redact_url(url: str) -> str:
    """scheme://host[:port] only: paths and queries of webhook URLs often carry tokens."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{netloc}/…"
