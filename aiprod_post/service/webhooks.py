"""Webhook targets and delivery, with the network reach of a webhook kept to the public internet.

A ``callback_url`` is chosen by a client but fetched by the server, from inside the
operator's network: left open it reaches cloud metadata (169.254.169.254), databases on
private addresses and the server's own loopback. So a target must be ``http`` or ``https``
and every address its host resolves to must be a public unicast address, unless the
operator allows the host or its network (``serve --webhook-allow``). Delivery resolves the
host once, checks the addresses and connects to the checked address itself (the ``Host``
header and TLS server name stay the URL's host), so a DNS answer that changes between the
check and the connection (rebinding) cannot move the request elsewhere. Redirects are never
followed: the signed body and its signature go to the one checked address only.

>>> policy = WebhookPolicy.from_options(["127.0.0.1/32", "hooks.internal"])
>>> policy.allows_address(ipaddress.ip_address("127.0.0.1"))
True
>>> policy.allows_address(ipaddress.ip_address("10.0.0.5"))
False
>>> check_callback_url("file:///etc/passwd", policy)
Traceback (most recent call last):
...
ValueError: callback_url: scheme 'file' is not allowed; use http or https
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence
from urllib.parse import SplitResult, urlsplit

__all__ = ["WebhookPolicy", "check_callback_url", "deliver", "RETRY_DELAYS"]

#: Seconds to wait before each retry after a transient failure (network error, 5xx, 408, 429).
RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
_TIMEOUT = 10.0

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class WebhookPolicy:
    """Which non-public targets the operator allows: networks (CIDR) and host names."""

    networks: tuple[_Network, ...] = ()
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_options(cls, values: Sequence[str]) -> "WebhookPolicy":
        """From ``--webhook-allow`` values: each a CIDR, an address or a host name."""
        networks: list[_Network] = []
        hosts: set[str] = set()
        for value in values:
            value = value.strip()
            try:
                networks.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                if not value or "/" in value or any(c.isspace() for c in value):
                    raise ValueError(f"--webhook-allow {value!r}: expected a CIDR "
                                     "(10.0.0.0/8), an address or a host name") from None
                hosts.add(value.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def allows_address(self, address: _Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(address in net for net in self.networks):
            return True
        return _public(address)

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts


def _public(address: _Address) -> bool:
    if (address.is_loopback or address.is_link_local or address.is_private
            or address.is_multicast or address.is_reserved or address.is_unspecified):
        return False
    if isinstance(address, ipaddress.IPv6Address) and (address.sixtofour or address.teredo):
        return False  # tunnels that embed an IPv4 address of any kind
    return address.is_global


def _split(url: str) -> SplitResult:
    if not isinstance(url, str) or len(url) > 2000:
        raise ValueError("callback_url: expected an http(s) URL of at most 2000 characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise ValueError("callback_url: contains spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "http://[::1" and the like
        raise ValueError(f"callback_url: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"callback_url: scheme {parts.scheme!r} is not allowed; "
                         "use http or https")
    if parts.username is not None or parts.password is not None:
        raise ValueError("callback_url: credentials in the URL are not allowed")
    if not parts.hostname:
        raise ValueError("callback_url: has no host")
    try:
        parts.port
    except ValueError:
        raise ValueError("callback_url: the port is not a number from 0 to 65535") from None
    return parts


def _resolve(parts: SplitResult, policy: WebhookPolicy) -> list[_Address]:
    """The host's addresses, all of which the policy allows; ValueError otherwise."""
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise ValueError(f"callback_url: host {host!r} does not resolve") from None
        # scope ids (fe80::1%eth0) are dropped: they are link-local and refused anyway
        addresses = list(dict.fromkeys(ipaddress.ip_address(i[4][0].split("%")[0])
                                       for i in infos))
        if not addresses:
            raise ValueError(f"callback_url: host {host!r} does not resolve")
    if policy.allows_host(host):
        return addresses
    refused = [a for a in addresses if not policy.allows_address(a)]
    if refused:
        raise ValueError(f"callback_url: {host!r} is {refused[0]}, a loopback, private, "
                         "link-local, multicast or reserved address; the operator can allow "
                         "it with serve --webhook-allow")
    return addresses


def check_callback_url(url: str, policy: WebhookPolicy) -> str:
    """Refuse a URL the server must not call (ValueError naming ``callback_url``)."""
    _resolve(_split(url), policy)
    return url


def _connect_checked(addresses: Sequence[_Address], port: int, timeout: float) -> socket.socket:
    """A connection to the first of the checked ``addresses`` that answers."""
    error: OSError = OSError("no address")
    for address in addresses:
        try:
            return socket.create_connection((str(address), port), timeout)
        except OSError as exc:
            error = exc
    raise error


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to already-checked addresses; the Host header stays the URL's host."""

    def __init__(self, host: str, port: int, addresses: Sequence[_Address],
                 timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses

    def connect(self) -> None:
        self.sock = _connect_checked(self._addresses, self.port, self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to already-checked addresses; SNI and certificate checks use the URL's host."""

    def __init__(self, host: str, port: int, addresses: Sequence[_Address],
                 timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._addresses = addresses

    def connect(self) -> None:
        raw = _connect_checked(self._addresses, self.port, self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def _post_once(parts: SplitResult, addresses: Sequence[_Address], body: bytes,
               headers: dict[str, str]) -> int:
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    kind = _PinnedHTTPS if https else _PinnedHTTP
    conn = kind(parts.hostname or "", port, addresses, _TIMEOUT)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read(65536)  # the answer's body is not ours to keep
        return resp.status
    finally:
        conn.close()


def deliver(url: str, body: bytes, signature: str, policy: WebhookPolicy,
            delays: Sequence[float] = RETRY_DELAYS,
            sleep: Callable[[float], None] = time.sleep) -> tuple[str, str]:
    """POST ``body`` to ``url``; returns ``("delivered" | "failed", reason)``, never raises.

    Retries after network errors, 5xx, 408 and 429; any other answer is final. A 3xx is a
    failure: following it would hand the signed body to a target nobody checked.
    """
    try:
        parts = _split(url)
    except ValueError as exc:
        return "failed", str(exc)
    headers = {"Content-Type": "application/json", "X-Aiprod-Signature": signature,
               "User-Agent": "aiprod-post-webhook"}
    reason = "not attempted"
    for attempt in range(len(delays) + 1):
        if attempt:
            sleep(delays[attempt - 1])
        try:
            # resolved and checked again per try; the try connects to what it checked
            addresses = _resolve(parts, policy)
        except ValueError as exc:
            reason = str(exc)
            if "does not resolve" in reason:
                continue
            return "failed", reason
        try:
            status = _post_once(parts, addresses, body, headers)
        except Exception as exc:  # noqa: BLE001 - any failure of a try is recorded, not raised
            reason = f"{type(exc).__name__}: {exc}"
            continue
        if 200 <= status < 300:
            return "delivered", f"HTTP {status}"
        reason = f"HTTP {status}"
        if 300 <= status < 400:
            return "failed", f"HTTP {status}: redirects are not followed"
        if status < 500 and status not in (408, 429):
            return "failed", reason
    return "failed", reason
