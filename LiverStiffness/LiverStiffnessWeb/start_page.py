"""The launcher's start page (``GET /``): it starts nothing itself. Its script asks for a session
with a deliberate ``POST /start`` (which a link, a prefetch, a crawler or another site's page
cannot send: the launcher checks ``Host`` and ``Origin``), then opens the session's page.
A token given in the address (``?token=...``) is taken off the address bar: the launcher keeps it
in an HttpOnly cookie.
"""
from __future__ import annotations

HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
           "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                      "connect-src 'self'; frame-ancestors 'none'"}

HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>LiverStiffness</title>
<style>body { font-family: sans-serif; margin: 3em; color: #222; } #start-error { color: #b00020; }</style>
</head><body>
<h2>LiverStiffness</h2>
<p id="start-status">Starting your session&hellip;</p>
<p id="start-error"></p>
<noscript>This page needs JavaScript.</noscript>
<script>
if (location.search) history.replaceState(null, "", location.pathname);
fetch("start", {method: "POST", credentials: "same-origin", headers: {"X-LiverStiffness-Start": "1"}})
  .then(r => r.ok ? r.json() : r.text().then(t => { throw new Error(t.trim() || r.statusText); }))
  .then(j => location.replace(j.url))
  .catch(e => {
    document.getElementById("start-status").textContent = "The session could not be started.";
    document.getElementById("start-error").textContent = e.message;
  });
</script>
</body></html>
"""
