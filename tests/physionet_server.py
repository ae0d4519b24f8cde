"""A local stand-in for PhysioNet's file server (tests/test_download.py, tests/test_cohort_download.py): HTTP on
127.0.0.1 with basic auth, Range requests, HEAD, and faults to order (dropped connections, redirects, no length)."""

from __future__ import annotations

import base64
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

USER = "alice"
PASSWORD = "pw-9f2c-Zq81-never-leaks"
PREFIX = "/files/demo/2.2/"


class TreeServer(ThreadingHTTPServer):
    """Serves ``root`` under ``prefix`` with basic auth (except ``open_access``, or paths under ``open_paths``), as
    PhysioNet does; records every request's path and Range header."""

    daemon_threads = True

    def __init__(self, root: Path, prefix: str = PREFIX, open_paths: tuple[str, ...] = ()):
        super().__init__(("127.0.0.1", 0), TreeHandler)
        self.root = root
        self.prefix = prefix
        self.open_paths = open_paths  # relative path prefixes served without a login (open-access projects)
        self.auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str | None]] = []
        self.drop_once: dict[str, int] = {}  # rel -> body bytes sent before the connection drops (first GET)
        self.always_drop: set[str] = set()
        self.ignore_range = False
        self.hide_length = False  # answer without Content-Length, closing the connection after the body
        self.redirects: dict[str, str] = {}  # rel -> Location sent instead of the file
        self.authorized: list[tuple[str, bool]] = []  # (rel, whether an Authorization header came)
        self.heads: list[str] = []  # HEAD requests (sizing), kept apart from the GETs in `seen`
        self.events: list[tuple[str, str]] = []  # (method, path) of every request, in order
        self.open_access = False  # serve without asking for a login (MIMIC-IV-ECG, PTB-XL)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{self.prefix}"

    def is_open(self, rel: str) -> bool:
        return self.open_access or rel.startswith(self.open_paths)

    def requests_for(self, rel: str) -> list[str | None]:
        with self.lock:
            return [rng for path, rng in self.seen if path == rel]


class TreeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        srv: TreeServer = self.server
        rel = unquote(urlsplit(self.path).path).removeprefix(srv.prefix)
        rng = self.headers.get("Range")
        with srv.lock:
            srv.seen.append((rel, rng))
            srv.events.append(("GET", rel))
            srv.authorized.append((rel, "Authorization" in self.headers))
        if rel in srv.redirects:
            return self._empty(302, {"Location": srv.redirects[rel]})
        if not srv.is_open(rel) and self.headers.get("Authorization") != srv.auth:
            return self._empty(401, {"WWW-Authenticate": 'Basic realm="PhysioNet"'})
        path = srv.root / rel
        if not path.is_file():
            return self._empty(404)
        data = path.read_bytes()
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match and not srv.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                return self._empty(416, {"Content-Range": f"bytes */{len(data)}"})
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if srv.hide_length:
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        with srv.lock:
            drop = 0 if rel in srv.always_drop else srv.drop_once.pop(rel, None)
        if drop is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[:drop])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def do_HEAD(self):
        srv: TreeServer = self.server
        rel = unquote(urlsplit(self.path).path).removeprefix(srv.prefix)
        with srv.lock:
            srv.heads.append(rel)
            srv.events.append(("HEAD", rel))
            srv.authorized.append((rel, "Authorization" in self.headers))
        if not srv.is_open(rel) and self.headers.get("Authorization") != srv.auth:
            return self._empty(401, {"WWW-Authenticate": 'Basic realm="PhysioNet"'})
        path = srv.root / rel
        if not path.is_file():
            return self._empty(404)
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
