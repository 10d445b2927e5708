"""Who may talk to the launcher and to a session process: the ``Host`` and ``Origin`` checks and the
session secret, as aiohttp middleware (both are aiohttp servers: the launcher directly, a session
through wslink).

- **Host.** A browser that resolves a foreign name to this machine (DNS rebinding) sends that
  name in ``Host``: only the names the server is meant to be reached by are served (loopback names
  by default; the ``--host`` name, the machine's own names for a wildcard ``--host``, and
  ``--allowed-hosts``), as Jupyter Server does.
- **Origin.** A browser always says which page opened a WebSocket or sent a POST: it must be the
  page's own origin (``Origin``'s host and port equal ``Host``). Clients that are not browsers send
  none, and are checked by the token and the session secret instead.
- **Session secret.** A session process listens on a loopback port that every account on the
  machine can reach: it serves only requests carrying the secret the launcher gave it (header
  ``X-LiverStiffness-Session``; the launcher adds it when it forwards, the browser never sees it).

Every refusal is a 403 with one line, and one line in the server's log.
"""
from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web

SECRET_HEADER = "X-LiverStiffness-Session"
SECRET_ENV = "LIVERSTIFFNESS_SESSION_SECRET"   # how the launcher hands a session process its secret
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ANY_HOST = "*"


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "[::]")


def host_name(host_header: str | None) -> str | None:
    """The name in a ``Host`` header (or an origin's netloc), without port or brackets, lower case;
    None when there is none or it cannot be parsed."""
    text = (host_header or "").strip()
    if not text or any(c in text for c in "/@ \t\\"):
        return None
    try:
        name = urlsplit(f"//{text}").hostname
    except ValueError:
        return None
    return name.rstrip(".").lower() if name else None


def machine_names() -> list[str]:
    """This machine's own names and addresses (not loopback), for a server bound to every
    interface: what other machines can use to reach it."""
    names: list[str] = []

    def add(n: str | None) -> None:
        n = (n or "").rstrip(".").lower()
        if n and not is_loopback(n) and n not in names:
            names.append(n)

    host = socket.gethostname()
    add(socket.getfqdn(host))
    add(host)
    try:
        for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP):
            add(info[4][0])
    except OSError:
        pass
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:   # the address of the interface a route leaves by (a UDP "connect" sends nothing)
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))
                add(s.getsockname()[0])
        except OSError:
            pass
    return [n for n in names if not n.startswith("fe80:")]   # link-local addresses need a zone


def allowed_host_names(bind: str, extra: Iterable[str] = ()) -> set[str]:
    """The ``Host`` names a server bound to ``bind`` answers: loopback names; the bound name
    itself, or for a wildcard bind the machine's names and addresses; and ``extra``
    (``--allowed-hosts``; ``*`` allows any)."""
    names = set(LOOPBACK_NAMES)
    bind_name = host_name(bind) if not is_wildcard(bind) else None
    if bind_name:
        names.add(bind_name)
    if is_wildcard(bind):
        names.update(machine_names())
    for e in extra:
        e = e.strip()
        if e == ANY_HOST:
            names.add(ANY_HOST)
        elif e:
            names.add(host_name(e) or e.lower())
    return names


def host_problem(request: web.Request, allowed: set[str]) -> str | None:
    """Why ``request``'s ``Host`` is not one this server answers to; None when it is."""
    raw = request.headers.get("Host")
    name = host_name(raw)
    if name is None:
        return "no valid Host header"
    if ANY_HOST in allowed or name in allowed or is_loopback(name):
        return None
    return f"Host {raw!r} is not a name this server answers to (see --allowed-hosts)"


def origin_problem(request: web.Request) -> str | None:
    """Why the ``Origin`` a browser sent is not this page's own; None when it is, or there is none."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    parts = urlsplit(origin) if origin != "null" else None
    if not parts or parts.scheme not in ("http", "https") or not parts.netloc:
        return f"Origin {origin!r} is not this page"
    if parts.netloc.lower() != (request.headers.get("Host") or "").lower():
        return f"Origin {origin!r} is not this page"
    return None


def has_secret(request: web.Request, secret: str) -> bool:
    given = request.headers.get(SECRET_HEADER, "")
    return bool(given) and secrets.compare_digest(given.encode(), secret.encode())


def middleware(allowed: set[str], log: Callable[[str], None], secret: str | None = None):
    """aiohttp middleware: refuse (403) a request without the session ``secret`` (when one is
    given), under a ``Host`` not in ``allowed``, or from a foreign ``Origin``."""
    @web.middleware
    async def guard(request: web.Request, handler):
        if secret is not None and not has_secret(request, secret):
            why = "no session secret (only the launcher may connect)"
        else:
            why = host_problem(request, allowed) or origin_problem(request)
        if why:
            kind = "websocket" if request.headers.get("Upgrade", "").lower() == "websocket" else request.method
            log(f"refused {kind} {request.path} from {request.remote}: {why}")
            raise web.HTTPForbidden(text=f"refused: {why}\n")
        return await handler(request)

    return guard
