"""Where the server may send HTTP on a user's behalf (monitor alert webhooks): a URL policy.

A webhook URL is user input that makes the *server* connect somewhere: without a policy it
reaches the cloud metadata service (169.254.169.254), the database or admin ports on
loopback, and the private network. So, unless a setting allows them:

- private, loopback, link-local, shared, multicast and reserved addresses are refused — also
  written the other ways a resolver accepts (``2130706433``, ``0x7f.1``, ``0177.0.0.1``,
  ``127.1``, ``::ffff:127.0.0.1``), and host names that resolve to them (checked again before
  every send, since DNS answers change);
- ``localhost`` and ``*.localhost`` are loopback by definition;
- credentials in the URL (``http://user:pass@host``) are refused: they would be stored and shown.

``LOOPML_WEBHOOK_ALLOW_PRIVATE=1`` allows every non-public address (a lab, tests);
``LOOPML_WEBHOOK_ALLOW_HOSTS=hooks.internal,10.2.0.0/16`` allows these names / networks only.
``redact_url`` is what logs and records show: no credentials, query or fragment.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable, Iterable
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Iterable[str]]


class URLRefused(ValueError):
    """The URL is not allowed; the message says why (without the URL's secrets)."""


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` of ``url``: never its user, password, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address of a host written as a number the C resolver accepts (decimal ``2130706433``,
    hex ``0x7f000001``, octal ``0177.0.0.1``, short ``127.1``), else None."""
    if not host or not all(c in "0123456789abcdefxABCDEFX." for c in host) or not host[0].isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def literal_address(host: str) -> IPAddress | None:
    """The IP address ``host`` stands for when it is one (any spelling), else None (a name)."""
    try:
        address: IPAddress = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        numeric = _numeric_ipv4(host)
        if numeric is None:
            return None
        address = numeric
    if isinstance(address, ipaddress.IPv6Address):  # IPv4 inside IPv6 reaches the IPv4 host
        inner = address.ipv4_mapped or address.sixtofour or (
            ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if int(address) >> 32 == 0 and int(address) > 1
            else None)  # ::a.b.c.d (IPv4-compatible)
        if inner is not None:
            return inner
    return address


class URLPolicy:
    """Allow/deny rules for outgoing webhook URLs (see the module docstring)."""

    def __init__(self, *, allow_private: bool = False, allow_hosts: Iterable[str] = ()) -> None:
        self.allow_private = allow_private
        self.allow_names: set[str] = set()
        self.allow_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in allow_hosts:
            item = item.strip().lower()
            if not item:
                continue
            try:
                self.allow_networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.allow_names.add(item.rstrip("."))

    @classmethod
    def from_settings(cls, settings) -> URLPolicy:  # settings: loopml.core.settings.Settings
        return cls(allow_private=settings.webhook_allow_private,
                   allow_hosts=(settings.webhook_allow_hosts or "").split(","))

    def _address_problem(self, address: IPAddress) -> str | None:
        if address.is_global and not address.is_multicast:
            return None
        if self.allow_private or any(address in net for net in self.allow_networks):
            return None
        kind = ("loopback" if address.is_loopback else "link-local" if address.is_link_local
                else "private" if address.is_private else "non-public")
        return (f"{address} is a {kind} address; webhooks go to public hosts unless "
                "LOOPML_WEBHOOK_ALLOW_PRIVATE=1 or LOOPML_WEBHOOK_ALLOW_HOSTS names it")

    def check(self, url: str, *, resolve: Resolver | None = None) -> str:
        """``url`` when allowed; else URLRefused. With ``resolve`` (host -> addresses) a host
        name is resolved and every address it has must be allowed too (done before sending)."""
        try:
            parts = urlsplit(url)
            host, _port = parts.hostname, parts.port
        except ValueError:
            raise URLRefused("not a valid URL") from None
        if parts.scheme not in ("http", "https") or not host:
            raise URLRefused("must be an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise URLRefused("credentials in the URL are refused (they would be stored and logged); "
                             "put a token in the path or let the receiver allow-list this server")
        host = host.rstrip(".").lower()
        if host in self.allow_names:
            return url
        address = literal_address(host)
        if address is not None:
            spelled = host.strip("[]")
            if isinstance(address, ipaddress.IPv4Address) and spelled != str(address) \
                    and ":" not in spelled and not self.allow_private:
                raise URLRefused(f"host {spelled!r} is the address {address} written as a number: "
                                 "write addresses as a.b.c.d")
            problem = self._address_problem(address)
            if problem:
                raise URLRefused(problem)
            return url
        if host == "localhost" or host.endswith(".localhost"):
            problem = self._address_problem(ipaddress.ip_address("127.0.0.1"))
            if problem:
                raise URLRefused(f"{host} is loopback; " + problem.split("; ", 1)[1])
            return url
        if resolve is not None:
            for found in resolve(host):
                problem = self._address_problem(literal_address(found) or ipaddress.ip_address(found))
                if problem:
                    raise URLRefused(f"{host} resolves to {problem}")
        return url


def resolve_host(host: str) -> list[str]:
    """Every address ``host`` resolves to (none if it does not resolve: the send then fails)."""
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except (OSError, UnicodeError):
        return []
