"""``liverstiffness serve``: the browser front end (trame-slicer), one process per session.

Needs the ``web`` extra (``pip install liverstiffness[web]``: trame-slicer with Slicer's MRML).
"""
from __future__ import annotations

from .options import add_device_option


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve the browser front end (exam chooser, mask check, estimate, attention maps)",
        description="Serve the LiverStiffness page. Each browser session gets its own process and folder, "
                    "removed when the browser has gone. Binds 127.0.0.1 unless --host says otherwise; "
                    "any other address requires a token (--token, or one is made up and printed).")
    p.add_argument("--data", help="folder of exams (folders of NIfTI/NRRD/MHA files or DICOM series); "
                                  "the page can open nothing outside it")
    p.add_argument("--model", help="model folder (default: the shipped demo model)")
    add_device_option(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token", help="access token (required off this machine; default: a random one, printed)")
    p.add_argument("--allowed-hosts", default="",
                   help="comma-separated host names (or addresses) the page may also be reached by, e.g. the name a "
                        "reverse proxy forwards; requests under any other name are refused (DNS rebinding). "
                        "Default: loopback names, and the --host name (for 0.0.0.0: this machine's names and addresses). "
                        "'*' allows any name, and needs a token")
    p.add_argument("--max-sessions", type=int, default=4, help="browser sessions at once (each is a process with its own scene)")
    p.add_argument("--max-upload-mb", type=float, default=512, help="largest upload per exam, MB")
    p.add_argument("--idle", type=float, default=60.0, help="end a session this many seconds after its browser left")
    p.add_argument("--certfile", help="TLS certificate (PEM) to serve HTTPS")
    p.add_argument("--keyfile", help="TLS private key (PEM)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import InputError

    try:
        from LiverStiffnessWeb.launcher import ServeOptions, serve
    except ImportError as exc:
        raise InputError("serve", f"the web front end is not installed ({exc}); "
                                  "install it with: pip install 'liverstiffness[web]'") from None
    serve(ServeOptions(data=args.data, model=args.model, device=args.device, host=args.host, port=args.port,
                       token=args.token, max_sessions=args.max_sessions, max_upload_mb=args.max_upload_mb,
                       idle_s=args.idle, certfile=args.certfile, keyfile=args.keyfile,
                       allowed_hosts=tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip())))
    return 0
