"""``srtpgw status`` and ``srtpgw reload``: clients of a running gateway's admin endpoint."""

from __future__ import annotations

import http.client
import json
import sys
from typing import Any, TextIO

from gateway.config import HostPort

TIMEOUT = 5.0


class AdminUnreachable(Exception):
    """The admin endpoint did not answer with a usable response."""


def request(admin: HostPort, method: str, path: str,
            token: str | None = None) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(admin.host, admin.port, timeout=TIMEOUT)
    headers = {"Content-Length": "0"} if method == "POST" else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        body = resp.read(1 << 20)
    except (OSError, http.client.HTTPException) as exc:
        raise AdminUnreachable(f"cannot reach the admin endpoint at {admin}: {exc}") from None
    finally:
        conn.close()
    try:
        doc = json.loads(body)
    except ValueError:
        raise AdminUnreachable(f"{admin}{path} answered {resp.status} with non-JSON") from None
    if not isinstance(doc, dict):
        raise AdminUnreachable(f"{admin}{path} answered {resp.status} with unexpected JSON")
    return resp.status, doc


def _table(rows: list[tuple[str, ...]], out: TextIO) -> None:
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def render_status(doc: dict[str, Any], out: TextIO) -> None:
    ready = doc.get("ready", {})
    state = "draining" if doc.get("draining") else ("ready" if ready.get("ok") else "not ready")
    out.write(f"{doc.get('name')} {doc.get('version')}  up {doc.get('uptime')}s  {state}\n")
    for reason in ready.get("reasons", []):
        out.write(f"  ! {reason}\n")
    calls = doc.get("calls", {})
    out.write(f"\nactive calls: {calls.get('active', 0)}\n")
    if calls.get("listed", 0) < calls.get("active", 0):
        out.write(f"(listing the first {calls['listed']})\n")
    listing = calls.get("list") or []
    if listing:
        cols = ("call", "from_trunk", "to_trunk", "state", "duration", "media")
        rows = [tuple(c.upper() for c in cols)]
        rows += [tuple(str(c.get(k, "")) for k in cols) for c in listing]
        _table(rows, out)
    by_trunk = calls.get("by_trunk") or {}
    if by_trunk:
        out.write("\n")
        _table([("TRUNK", "ACTIVE")] + [(t, str(n)) for t, n in by_trunk.items()], out)
    bindings = doc.get("bindings") or []
    if bindings:
        out.write("\nregistered:\n")
        cols = ("trunk", "user", "transport", "flow", "outbound", "expires_in")
        _table([tuple(c.upper() for c in cols)]
               + [tuple(str(b.get(k, "")) for k in cols) for b in bindings], out)
    out.write("\n")
    _table([("COUNTER", "VALUE")] + [(k, str(v)) for k, v in doc.get("counters", {}).items()],
           out)
    certs = doc.get("certificates") or []
    if certs:
        out.write("\n")
        _table([("CERTIFICATE", "DAYS LEFT", "PATH")] +
               [(c["name"], str(c["days_left"]), c["path"]) for c in certs], out)


def main(admin: HostPort, out: TextIO | None = None, token: str | None = None) -> int:
    """Print the gateway's state; exit 0 if it answered, 1 if not."""
    out = out or sys.stdout
    try:
        code, doc = request(admin, "GET", "/status", token)
    except AdminUnreachable as exc:
        print(f"srtpgw status: {exc}", file=sys.stderr)
        return 1
    if code != 200:
        print(f"srtpgw status: {admin} answered {code}: {doc.get('error')}", file=sys.stderr)
        return 1
    render_status(doc, out)
    return 0


def main_reload(admin: HostPort, out: TextIO | None = None, token: str | None = None) -> int:
    """Ask the gateway to reload; exit 0 if it took the new config, 1 if refused or unreachable."""
    out = out or sys.stdout
    try:
        code, doc = request(admin, "POST", "/reload", token)
    except AdminUnreachable as exc:
        print(f"srtpgw reload: {exc}", file=sys.stderr)
        return 1
    if code in (400, 401, 403, 421):
        print(f"srtpgw reload: {admin} answered {code}: {doc.get('error')}", file=sys.stderr)
        return 1
    if not doc.get("ok"):
        print(f"srtpgw reload: refused, the running config stays: {doc.get('error')}",
              file=sys.stderr)
        return 1
    out.write(f"reloaded; changed: {', '.join(doc.get('changed') or []) or 'nothing'}\n")
    if doc.get("restart_needed"):
        out.write(f"needs a restart to take effect: {', '.join(doc['restart_needed'])}\n")
    for w in doc.get("warnings") or []:
        out.write(f"warning: {w}\n")
    return 0
