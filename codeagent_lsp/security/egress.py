"""No egress: the process connects to this machine and to the inference services the
administrator allowed, and to nothing else.

The guard is a `sys.addaudithook` on the interpreter's socket events, so it sees every
connection and every name lookup any code in the process makes, ours and every library's,
before the operating system does. A refused one raises PermissionError in the caller and is
reported (the server writes it to the audit log). Audit hooks cannot be removed, so one hook is
installed per process and `install` swaps the guard it consults.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from codeagent_lsp.security import audit
from codeagent_lsp.security.feature import Feature
from codeagent_lsp.security.identity import Identity

log = logging.getLogger(__name__)

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_RESOLVE_SECONDS = 60.0
"""How long the addresses of an allowed host name are trusted before they are looked up again."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


def endpoint_of(url: str) -> Endpoint:
    """The host and port an http(s) URL connects to."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    default = 443 if parts.scheme == "https" else 80
    return Endpoint(parts.hostname.lower(), parts.port or default)


def is_local(host: str) -> bool:
    """Loopback, the unspecified address (which Linux connects to this machine) or a name for
    them."""
    if host.lower() in LOCAL_NAMES:
        return True
    if not _is_address(host):
        return False
    address = ipaddress.ip_address(host.split("%", 1)[0])
    return address.is_loopback or address.is_unspecified


def allowed_url(url: str, allowed_urls: Iterable[str]) -> bool:
    """Whether an http(s) URL is on this machine or one of the allowed services."""
    endpoint = endpoint_of(url)
    return is_local(endpoint.host) or endpoint in {endpoint_of(u) for u in allowed_urls}


def check_inference_url(url: str, allowed_urls: Iterable[str]) -> None:
    """Refuse (and report, when a guard is installed) an inference service that is off this
    machine and not allowed: a client's settings never widen what the policy allows."""
    try:
        if allowed_url(url, allowed_urls):
            return
        endpoint = endpoint_of(url)
    except ValueError as exc:
        raise PermissionError(errno.EINVAL, str(exc)) from exc
    what = f"inference service {endpoint.host}:{endpoint.port}"
    if _active is not None:
        _active.on_refused(what)
    raise PermissionError(
        errno.EACCES,
        f"{what} refused: it is not this machine and the policy's [network] inference does not "
        "list it",
    )


class EgressGuard:
    """Decides each connection and name lookup: local ones and the allowed endpoints pass."""

    def __init__(self, allowed_urls: Iterable[str], on_refused: Callable[[str], None]) -> None:
        self.allowed = frozenset(endpoint_of(u) for u in allowed_urls)
        self.on_refused = on_refused
        self._resolved: dict[Endpoint, tuple[float, frozenset[str]]] = {}
        self._resolving = threading.local()

    def check_lookup(self, host: object) -> None:
        name = _text(host)
        if not name or _is_address(name) or is_local(name):
            return  # an address literal asks no resolver: the connection is decided on its own
        if any(e.host == name.lower() for e in self.allowed):
            return
        self._refuse(f"name lookup of {name}")

    def check_connect(self, address: object) -> None:
        if not isinstance(address, tuple) or len(address) < 2:
            return  # a Unix socket: a file on this machine
        host, port = _text(address[0]), address[1]
        if is_local(host) or self._allowed_address(host.lower(), port):
            return
        self._refuse(f"connection to {host}:{port}")

    def _allowed_address(self, host: str, port: object) -> bool:
        return any(
            e.port == port and (host == e.host or host in self._addresses(e)) for e in self.allowed
        )

    def _addresses(self, endpoint: Endpoint) -> frozenset[str]:
        """The addresses an allowed host name resolves to (cached: connections are pooled)."""
        now = time.monotonic()
        cached = self._resolved.get(endpoint)
        if cached and now - cached[0] < _RESOLVE_SECONDS:
            return cached[1]
        self._resolving.active = True
        try:
            infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
            addresses = frozenset(str(info[4][0]) for info in infos)
        except OSError:
            addresses = frozenset()
        finally:
            self._resolving.active = False
        self._resolved[endpoint] = (now, addresses)
        return addresses

    def _refuse(self, what: str) -> None:
        message = f"codeagent: {what} refused: not this machine nor an allowed inference service"
        self.on_refused(what)
        raise PermissionError(errno.EACCES, message)

    def on_event(self, event: str, args: tuple[object, ...]) -> None:
        if getattr(self._resolving, "active", False):
            return  # the guard's own lookup of an allowed name
        if event == "socket.getaddrinfo":
            self.check_lookup(args[0])
        elif event in ("socket.connect", "socket.sendto", "socket.sendmsg") and len(args) > 1:
            self.check_connect(args[1])


_active: EgressGuard | None = None
_hook_installed = False
_install_lock = threading.Lock()


def install(guard: EgressGuard) -> None:
    """Make `guard` decide every connection of this process from now on."""
    global _active, _hook_installed
    with _install_lock:
        _active = guard
        if not _hook_installed:
            sys.addaudithook(_audit_hook)
            _hook_installed = True


_SOCKET_EVENTS = frozenset(
    {"socket.getaddrinfo", "socket.connect", "socket.sendto", "socket.sendmsg"}
)


def _audit_hook(event: str, args: tuple[object, ...]) -> None:
    # Called for every audit event of the process (each open, import, exec): one set lookup.
    guard = _active
    if guard is not None and event in _SOCKET_EVENTS:
        guard.on_event(event, args)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")  # already IDNA-encoded
    return "" if value is None else str(value)


def guard_process(
    allowed_urls: tuple[str, ...], identity: Identity, open_log: Callable[[], audit.AuditLog]
) -> None:
    """Guard this process for `identity`: a refused connection is logged and audited in the log
    `open_log` opens, on the first refusal (most processes never have one)."""
    opened: list[audit.AuditLog] = []

    def refused(what: str) -> None:
        log.warning("codeagent: %s refused (no egress)", what)
        if not opened:
            opened.append(open_log())
        audit.deny(opened[0], audit.new_row(identity, Feature.NETWORK, None, None), what)

    install(EgressGuard(allowed_urls, refused))
