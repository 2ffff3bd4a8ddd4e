"""Where the server may send a webhook: only to public addresses, unless an admin allows a host.

A webhook URL is chosen by any user who manages alert rules, and the server POSTs to it from
inside the network. So the host is resolved, every address it resolves to must be public
(not loopback, private, link-local such as cloud metadata, multicast, reserved, shared or
documentation space, nor an IPv6 form that carries such an IPv4 address), and the request then
connects to the address that was checked, so a second DNS answer cannot swap it for another.
Redirects are never followed: a 3xx is reported as such. `OBSERVATORY_WEBHOOK_ALLOW_HOSTS`
names hosts, addresses or networks that are allowed anyway (README, "Alerts").
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from observatory_core.base.errors import UserError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
ALLOW_SETTING = "OBSERVATORY_WEBHOOK_ALLOW_HOSTS"

# Checked by hand as well as through `is_global`, whose lists differ between Python versions
# (3.11 calls multicast and 192.0.0.0/24 global). First match names the refusal.
_V4_REFUSED = [
    (ipaddress.ip_network(n), why)
    for n, why in (
        ("0.0.0.0/8", "a 'this network' address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address (where cloud metadata services live)"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.88.99.0/24", "a 6to4 relay address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
    )
]
_V6_REFUSED = [
    (ipaddress.ip_network(n), why)
    for n, why in (
        ("::1/128", "a loopback address"),
        ("::/128", "the unspecified address"),
        ("::/96", "an IPv4-compatible address"),
        ("100::/64", "a discard address"),
        ("2001:db8::/32", "a documentation address"),
        ("64:ff9b:1::/48", "a local NAT64 address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
    )
]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def refusal(address: Address) -> str | None:
    """Why the server must not send to this address; None when it is a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = (
            address.ipv4_mapped
            or address.sixtofour
            or (address.teredo[1] if address.teredo else None)
            or (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in _NAT64 else None)
        )
        if embedded is not None:
            inner = refusal(embedded)
            return f"an IPv6 form of {embedded}, {inner}" if inner else None
        table = _V6_REFUSED
    else:
        table = _V4_REFUSED
    for network, why in table:
        if address in network:
            return why
    flags = ("is_loopback", "is_private", "is_link_local", "is_multicast", "is_reserved")
    if any(getattr(address, flag) for flag in flags) or address.is_unspecified:
        return "a reserved address"
    if not address.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True)
class AllowList:
    """Hosts (exact names), addresses and networks an admin allows although not public."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        hosts, networks = set(), []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if "/" in entry or ":" in entry or " " in entry:
                    raise UserError(
                        f"{ALLOW_SETTING} entry {raw!r} is neither a host name, an address nor "
                        "a network; write e.g. hooks.internal,10.1.2.3,10.20.0.0/16."
                    ) from None
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(networks))

    def host(self, name: str) -> bool:
        return name.lower().rstrip(".") in self.hosts

    def address(self, address: Address) -> bool:
        return any(address in network for network in self.networks)


def resolve(host: str, port: int) -> list[Address]:
    """Every address the host resolves to (an address literal resolves to itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[Address] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if address not in seen:
            seen.append(address)
    return seen


class Refused(UserError):
    """The webhook target is not allowed; the message names the address and the fix."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[Address, ...]  # checked; the request connects to these only


def _split(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise Refused(f"Webhook URL {url[:80]!r} has an invalid port.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"Webhook URL {url[:80]!r} must be an http:// or https:// address.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def check_target(url: str, allow: AllowList, *, resolver=None) -> Target:
    """The URL's host resolved and checked; raises `Refused` naming the first bad address.

    A host on the allow list passes whatever it resolves to; otherwise each address must be
    public or inside an allowed network. Resolution failures raise `OSError`."""
    scheme, host, port, path = _split(url)
    addresses = tuple((resolver or resolve)(host, port))
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    if not allow.host(host):
        for address in addresses:
            why = refusal(address)
            if why and not allow.address(address):
                shown = f"{host} is" if host == str(address) else f"{host} resolves to {address},"
                raise Refused(
                    f"Webhook host {shown} {why}; the server does not send alerts inside its "
                    f"own network. Use a public address, or ask an admin to allow the host "
                    f"({ALLOW_SETTING})."
                )
    return Target(scheme, host, port, path, addresses)


def post_pinned(target: Target, data: bytes, timeout: float) -> tuple[int, str | None]:
    """POST to the checked addresses only (Host header and TLS name stay the URL's host);
    returns the status and, for a redirect, where it pointed (never followed)."""
    cls = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    last_error: OSError | None = None
    for address in target.addresses:
        conn = cls(target.host, target.port, timeout=timeout)
        # http.client opens its socket through this attribute: aim it at the checked address
        conn._create_connection = lambda _addr, t, src, ip=str(address): socket.create_connection(
            (ip, target.port), t, src
        )
        try:
            conn.request(
                "POST",
                target.path,
                body=data,
                headers={"content-type": "application/json", "user-agent": "llm-observatory"},
            )
            response = conn.getresponse()
            response.read(65536)
            return response.status, response.getheader("location")
        except ConnectionRefusedError as exc:  # try the host's next address
            last_error = exc
        finally:
            conn.close()
    raise last_error or OSError("no address to connect to")
