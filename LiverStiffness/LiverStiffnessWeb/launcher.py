"""``liverstiffness serve``: one page process per browser session, behind one address.

trame-slicer keeps one MRML scene per process, so each browser session gets its own process
(``app.py``) on a private loopback port, with its own work folder. This launcher is the only
thing the network sees: it checks ``Host``, ``Origin`` and the token (``guard.py``), serves a start
page whose ``POST /start`` starts a session's process, forwards the page and its websocket to it
(``/s/<session>/...``) with the session's secret, and when the browser has been gone for a while
it stops the process tree and removes the session's folder (uploads, runs, results).

Safety: it binds 127.0.0.1 unless told otherwise; bound elsewhere it requires a token (given,
or made up and printed); it answers only the names it is meant to be reached by and pages of its
own origin; a session is reachable only from the browser that opened it (an HttpOnly cookie) and
its process only through the launcher (a secret); the number of sessions is capped.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from LiverStiffnessLib.process import ChildProcess

from . import guard, start_page
from .guard import is_loopback, is_wildcard

_HERE = Path(__file__).resolve().parent

TOKEN_COOKIE = "liverstiffness_token"
CLIENT_COOKIE = "liverstiffness_client"
HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade", "host", "content-length", "content-encoding"}
# Not forwarded to a session either: the browser's cookies (the token), its Origin (checked here;
# the session sees the launcher as its only client), and a secret header it may try to supply.
DROPPED_HEADERS = HOP_HEADERS | {"cookie", "origin", guard.SECRET_HEADER.lower()}
START_HEADER = "X-LiverStiffness-Start"   # sent by the start page's script; no form or link can send it


@dataclass
class ServeOptions:
    data: str | None = None
    model: str | None = None
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    max_sessions: int = 4
    max_upload_mb: float = 512
    idle_s: float = 60.0          # a session whose browser has been gone this long is ended
    start_timeout_s: float = 180.0
    certfile: str | None = None
    keyfile: str | None = None
    work_root: str | None = None  # where session folders go (default: the system temp folder)
    allowed_hosts: tuple[str, ...] = ()   # more names the page may be reached by (--allowed-hosts; "*": any)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Session:
    sid: str
    client: str                   # the browser's cookie: only it may use this session
    port: int
    work: Path
    child: ChildProcess
    secret: str                   # only requests carrying it reach the session's process
    sockets: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    ready: bool = False


class Launcher:
    def __init__(self, opts: ServeOptions):
        self.opts = opts
        self.sessions: dict[str, Session] = {}
        self.http: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self.allowed_hosts = guard.allowed_host_names(opts.host, opts.allowed_hosts)

    # ------------------------------------------------------------------ sessions
    def _start_session(self, client: str) -> Session:
        sid = secrets.token_urlsafe(16)
        work = Path(tempfile.mkdtemp(prefix="liverstiffness-session-", dir=self.opts.work_root))
        port = free_port()
        cmd = [sys.executable, "-m", "LiverStiffnessWeb.app", "--work", str(work), "--host", "127.0.0.1",
               "--port", str(port), "--device", self.opts.device, "--max-upload-mb", str(self.opts.max_upload_mb)]
        if self.opts.data:
            cmd += ["--data", str(Path(self.opts.data).resolve())]
        if self.opts.model:
            cmd += ["--model", str(Path(self.opts.model).resolve())]
        secret = secrets.token_urlsafe(32)
        # In the environment, not on the command line: another account can read a process's
        # arguments (ps), not its environment.
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{guard.SECRET_ENV: secret},
                   PYTHONPATH=os.pathsep.join(p for p in (str(_HERE.parent), os.environ.get("PYTHONPATH", "")) if p))
        if not env.get("DISPLAY"):
            env.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # no X server: render through EGL
        try:
            child = ChildProcess(cmd, env=env, cwd=str(work))
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        session = Session(sid, client, port, work, child, secret)
        self.sessions[sid] = session
        print(f"session {sid[:6]}: started (pid {child.pid}, port {port}, {len(self.sessions)} open)", flush=True)
        return session

    async def _wait_ready(self, s: Session) -> None:
        deadline = time.monotonic() + self.opts.start_timeout_s
        while time.monotonic() < deadline:
            self._relay(s)
            if s.child.poll() is not None:
                raise web.HTTPServiceUnavailable(text=f"the session failed to start: {s.child.last_error()}")
            try:
                async with self.http.get(f"http://127.0.0.1:{s.port}/index.html",
                                         headers={guard.SECRET_HEADER: s.secret}) as r:
                    if r.status == 200:
                        s.ready, s.last_seen = True, time.monotonic()
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
        raise web.HTTPServiceUnavailable(text="the session did not start in time")

    @staticmethod
    def _relay(s: Session) -> None:
        """The session's own output (its errors and warnings) into the server's log."""
        for line in s.child.new_lines():
            if line.strip():
                print(f"session {s.sid[:6]}| {line}", flush=True)

    def end_session(self, s: Session, why: str) -> None:
        self.sessions.pop(s.sid, None)
        s.child.kill_tree()
        shutil.rmtree(s.work, ignore_errors=True)
        print(f"session {s.sid[:6]}: ended ({why}); {len(self.sessions)} open", flush=True)

    async def reap(self) -> None:
        """End sessions whose browser has been gone for ``idle_s``, and those whose process died."""
        while True:
            await asyncio.sleep(2.0)
            now = time.monotonic()
            for s in list(self.sessions.values()):
                self._relay(s)
                if s.child.poll() is not None:
                    self.end_session(s, "its process exited")
                elif s.ready and s.sockets == 0 and now - s.last_seen > self.opts.idle_s:
                    self.end_session(s, "browser gone")

    # ------------------------------------------------------------------ access
    def _authorised(self, request: web.Request) -> bool:
        token = self.opts.token
        if not token:
            return True
        given = request.query.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:]
        return secrets.compare_digest(given.encode(), token.encode())

    def _session_for(self, request: web.Request) -> Session:
        if not self._authorised(request):
            raise web.HTTPUnauthorized(text="a token is required: open the address printed by `liverstiffness serve`")
        s = self.sessions.get(request.match_info["sid"])
        client = request.cookies.get(CLIENT_COOKIE, "")
        if s is None or not client or not secrets.compare_digest(client.encode(), s.client.encode()):
            raise web.HTTPNotFound(text="no such session (it may have ended): open the start page again")
        s.last_seen = time.monotonic()
        return s

    # ------------------------------------------------------------------ handlers
    async def index(self, request: web.Request) -> web.StreamResponse:
        """The start page; it starts nothing (its script asks with ``POST /start``)."""
        if not self._authorised(request):
            raise web.HTTPUnauthorized(text="a token is required: open the address printed by `liverstiffness serve`")
        resp = web.Response(text=start_page.HTML, content_type="text/html", headers=start_page.HEADERS)
        if self.opts.token:
            resp.set_cookie(TOKEN_COOKIE, self.opts.token, httponly=True, samesite="Strict",
                            secure=bool(self.opts.certfile), path="/")
        return resp

    async def start(self, request: web.Request) -> web.StreamResponse:
        """``POST /start`` from the start page: a new session, its page's address as JSON."""
        if not self._authorised(request):
            raise web.HTTPUnauthorized(text="a token is required: open the address printed by `liverstiffness serve`")
        if request.headers.get(START_HEADER) != "1":
            print(f"refused POST /start from {request.remote}: not sent by the start page", flush=True)
            raise web.HTTPForbidden(text="sessions are started from the start page: open it")
        async with self._lock:
            if len(self.sessions) >= self.opts.max_sessions:
                raise web.HTTPServiceUnavailable(text=f"{len(self.sessions)} sessions are open, the most this server "
                                                      "allows: close one, or try again in a minute")
            client = request.cookies.get(CLIENT_COOKIE) or secrets.token_urlsafe(24)
            s = self._start_session(client)
        try:
            await self._wait_ready(s)
        except web.HTTPException:
            self.end_session(s, "did not start")
            raise
        resp = web.json_response({"url": f"/s/{s.sid}/index.html"}, headers={"Cache-Control": "no-store"})
        resp.set_cookie(CLIENT_COOKIE, client, httponly=True, samesite="Strict", secure=bool(self.opts.certfile),
                        path="/")
        return resp

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        s = self._session_for(request)
        tail = request.match_info.get("tail", "")
        if tail == "ws" and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._proxy_ws(request, s)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in DROPPED_HEADERS}
        headers[guard.SECRET_HEADER] = s.secret
        url = f"http://127.0.0.1:{s.port}/{tail}"
        async with self.http.request(request.method, url, params=request.query, headers=headers,
                                     data=await request.read(), allow_redirects=False) as r:
            body = await r.read()
            out = {k: v for k, v in r.headers.items() if k.lower() not in HOP_HEADERS}
            return web.Response(status=r.status, body=body, headers=out)

    async def _proxy_ws(self, request: web.Request, s: Session) -> web.WebSocketResponse:
        limit = int(self.opts.max_upload_mb * 1e6 * 1.5) + (1 << 20)  # uploads travel on the websocket
        server_ws = web.WebSocketResponse(max_msg_size=limit, autoping=True)
        await server_ws.prepare(request)
        s.sockets += 1
        try:
            async with self.http.ws_connect(f"ws://127.0.0.1:{s.port}/ws", max_msg_size=limit,
                                            headers={guard.SECRET_HEADER: s.secret}) as child_ws:
                async def pump(src, dst):
                    async for msg in src:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            await dst.send_str(msg.data)
                        elif msg.type == aiohttp.WSMsgType.BINARY:
                            await dst.send_bytes(msg.data)
                        else:
                            break

                tasks = [asyncio.ensure_future(pump(server_ws, child_ws)), asyncio.ensure_future(pump(child_ws, server_ws))]
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in tasks:
                    t.cancel()
        except aiohttp.ClientError:
            pass
        finally:
            s.sockets -= 1
            s.last_seen = time.monotonic()
            await server_ws.close()
        return server_ws

    # ------------------------------------------------------------------ app
    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=int(self.opts.max_upload_mb * 1e6) + (1 << 20),
                              middlewares=[guard.middleware(self.allowed_hosts, lambda line: print(line, flush=True))])
        app.router.add_get("/", self.index)
        app.router.add_post("/start", self.start)
        app.router.add_route("*", "/s/{sid}/{tail:.*}", self.proxy)

        async def startup(_app):
            self.http = aiohttp.ClientSession()
            _app["reaper"] = asyncio.ensure_future(self.reap())

        async def cleanup(_app):
            _app["reaper"].cancel()
            for s in list(self.sessions.values()):
                self.end_session(s, "server stopped")
            await self.http.close()

        app.on_startup.append(startup)
        app.on_cleanup.append(cleanup)
        return app


def check_options(opts: ServeOptions) -> ServeOptions:
    """Refuse unsafe or impossible settings (InputError: one line on the command line)."""
    from liverstiffness.errors import InputError

    if opts.data:
        d = Path(opts.data)
        if not d.is_dir():
            raise InputError(f"--data {d}", "is not a folder")
    if opts.model:
        from liverstiffness.bundle_layout import model_folder

        if not (model_folder(opts.model) / "model.json").is_file():     # a MONAI bundle: its models/
            raise InputError(f"--model {opts.model}", "is not a model folder or a MONAI bundle (no model.json)")
    if not is_loopback(opts.host) and not opts.token:
        opts.token = secrets.token_urlsafe(24)  # never open to the network without one
    if opts.token is not None and len(opts.token) < 12:
        raise InputError("--token", "must be at least 12 characters")
    if bool(opts.certfile) != bool(opts.keyfile):
        raise InputError("--certfile/--keyfile", "give both, or neither")
    if opts.max_sessions < 1:
        raise InputError("--max-sessions", "must be 1 or more")
    for name in opts.allowed_hosts:
        if name != guard.ANY_HOST and guard.host_name(name) in (None, ""):
            raise InputError(f"--allowed-hosts {name}", "is not a host name or address")
    if guard.ANY_HOST in opts.allowed_hosts and not opts.token:
        raise InputError("--allowed-hosts *", "needs a token (--token): without one, any web site the user visits "
                                              "could reach the page under a name of its own (DNS rebinding)")
    return opts


def served_urls(opts: ServeOptions, scheme: str) -> list[str]:
    """The addresses to print: the bound name, or for a wildcard bind (``0.0.0.0``, ``::``) the
    machine's own names and addresses, which other machines can use (``0.0.0.0`` is not one)."""
    if is_wildcard(opts.host):
        names = [n for n in guard.machine_names() if opts.host != "0.0.0.0" or ":" not in n] or ["127.0.0.1"]
    else:
        names = [opts.host.strip("[]")]
    query = f"?token={opts.token}" if opts.token else ""
    return [f"{scheme}://{f'[{n}]' if ':' in n else n}:{opts.port}/{query}" for n in names]


def serve(opts: ServeOptions) -> None:
    opts = check_options(opts)
    launcher = Launcher(opts)
    ssl_ctx = None
    if opts.certfile:
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(opts.certfile, opts.keyfile)
    for url in served_urls(opts, "https" if ssl_ctx else "http"):
        print(f"LiverStiffness is served at {url}", flush=True)
    if not is_loopback(opts.host) and not ssl_ctx:
        print("warning: plain HTTP beyond this machine: put it behind HTTPS (--certfile/--keyfile, or a reverse proxy)",
              flush=True)
    web.run_app(launcher.make_app(), host=opts.host, port=opts.port, ssl_context=ssl_ctx, print=None,
                handle_signals=True, shutdown_timeout=5)
