"""A local stand-in for the Hugging Face Hub (and a plain web server), for tests and benchmarks.

Serves a folder read-only on 127.0.0.1 with the Hub's URL scheme:

- `/datasets/<owner>/<name>/resolve/<rev>/<path>` and `/plain/<path>`: the files, with byte
  ranges (`bytes=a-b`, `bytes=a-`, `bytes=-n`), HEAD, HTTP/1.1 keep-alive;
- `/api/datasets/<owner>/<name>/revision/<rev>`: `{"id", "sha"}` (the sha is `FakeHub.sha`);
- `/api/datasets/<owner>/<name>/tree/<rev>[/<path>]?recursive=true`: the files under `<path>` as the
  Hub lists them (`{type, oid, size, path}`), `page_size` entries per page, linked by
  `Link: <...&cursor=N>; rel="next"`.

Knobs (attributes, changeable while it runs) reproduce what a real server does to a client:
`latency_s` per request, `flaky` (the first GET of each file answers 503), `cut_once` (the first GET
of each file sends half its body, then drops the connection), `ignore_range` (200 with the whole
file), `token` (requests without `Bearer <token>` get 401; `gated` makes it 403), `statuses`
({path suffix: status}), `redirect` (resolve URLs answer 302 to `/cdn/...` on `cdn_host`, valid for
`cdn_uses` requests, then 403, as the Hub's signed CDN URLs expire). Every request is recorded
(`requests`: method, path, Range, status, body bytes, Authorization).

    with FakeHub(root) as hub:          # or: python -m tools.fake_hub --root DIR [--latency-ms 20]
        hub.url                         # http://127.0.0.1:PORT (set HF_ENDPOINT to it)
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

_RESOLVE = re.compile(r"^/(?:plain|datasets/[^/]+/[^/]+/resolve/[^/]+)/(.+)$")
_CDN = re.compile(r"^/cdn/(\d+)/(.+)$")
_API = re.compile(r"^/api/datasets/(?P<repo>[^/]+/[^/]+)/(?P<kind>revision|tree)/(?P<rev>[^/]+)(?:/(?P<path>.+))?$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    status: int
    nbytes: int
    auth: str | None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: "FakeHub"

    def log_message(self, *args):  # keep test output quiet
        pass

    # -- helpers ---------------------------------------------------------------------------
    def _record(self, status: int, nbytes: int) -> None:
        with self.hub.lock:
            self.hub.requests.append(Request(self.command, self.path, self.headers.get("Range"), status, nbytes,
                                             self.headers.get("Authorization")))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self._record(status, 0 if head else len(body))

    def _file(self, rel: str) -> Path | None:
        f = (self.hub.root / unquote(rel)).resolve()
        return f if f.is_file() and self.hub.root in f.parents else None

    def _refused(self) -> bool:
        """Token and status checks shared by every route; True when a refusal was sent."""
        for suffix, status in self.hub.statuses.items():
            if urlsplit(self.path).path.endswith(suffix):
                self._send(status, b"refused by the test")
                return True
        if self.hub.token and not self.path.startswith("/cdn/"):
            if self.headers.get("Authorization") != f"Bearer {self.hub.token}":
                self._send(403 if self.hub.gated else 401, b"token needed")
                return True
        return False

    # -- routes ------------------------------------------------------------------------------
    def do_HEAD(self):
        self._route(head=True)

    def do_GET(self):
        self._route(head=False)

    def _route(self, head: bool) -> None:
        if self.hub.latency_s:
            time.sleep(self.hub.latency_s)
        if self._refused():
            return
        url = urlsplit(self.path)
        api = _API.match(url.path)
        if api:
            return self._api(api, parse_qs(url.query), head)
        cdn = _CDN.match(url.path)
        if cdn:
            with self.hub.lock:
                uses = self.hub.cdn_left.get(cdn[1], 0)
                self.hub.cdn_left[cdn[1]] = uses - 1
            if uses <= 0:
                return self._send(403, b"signature expired", head=head)
            return self._serve(cdn[2], head)
        m = _RESOLVE.match(url.path)
        if not m:
            return self._send(404, b"no such route", head=head)
        if self.hub.redirect and url.path.startswith("/datasets/") and self._file(m[1]) is not None:
            with self.hub.lock:
                self.hub.signatures += 1
                sig = str(self.hub.signatures)
                self.hub.cdn_left[sig] = self.hub.cdn_uses
            return self._send(302, b"", {"Location": f"http://{self.hub.cdn_host}:{self.hub.port}/cdn/{sig}/{m[1]}"},
                              head=head)
        return self._serve(m[1], head)

    def _serve(self, rel: str, head: bool) -> None:
        f = self._file(rel)
        if f is None:
            return self._send(404, b"not found", head=head)
        size = f.stat().st_size
        if head:
            return self._head(size)
        with self.hub.lock:  # "first" per file, whatever URL (resolve, plain, a fresh CDN signature) asks for it
            first = rel not in self.hub.seen
            self.hub.seen.add(rel)
        if self.hub.flaky and first:
            return self._send(503, b"try again")
        rng = _RANGE.match(self.headers.get("Range", "").strip())
        if rng and not self.hub.ignore_range:
            lo_s, hi_s = rng.groups()
            if lo_s == "" and hi_s:
                lo, hi = max(0, size - int(hi_s)), size - 1
            else:
                lo, hi = int(lo_s or 0), min(int(hi_s) if hi_s else size - 1, size - 1)
            if lo >= size:
                return self._send(416, b"", {"Content-Range": f"bytes */{size}"})
            status, headers = 206, {"Content-Range": f"bytes {lo}-{hi}/{size}", "Accept-Ranges": "bytes"}
        else:
            lo, hi = 0, size - 1
            status, headers = 200, {"Accept-Ranges": "none" if self.hub.ignore_range else "bytes"}
        with f.open("rb") as fh:  # only the bytes asked for: zips are large
            fh.seek(lo)
            body = fh.read(hi - lo + 1)
        if self.hub.cut_once and first and len(body) > 1:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self._record(status, len(body) // 2)
            return
        self._send(status, body, headers)

    def _head(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._record(200, 0)

    def _api(self, m: re.Match, query: dict, head: bool) -> None:
        if m["kind"] == "revision":
            return self._json({"id": m["repo"], "sha": self.hub.sha}, head=head)
        base = (self.hub.root / unquote(m["path"] or "")).resolve()
        if not (base == self.hub.root or self.hub.root in base.parents) or not base.is_dir():
            return self._send(404, json.dumps({"error": "path not found"}).encode(), head=head)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        found = sorted(base.rglob("*") if recursive else base.iterdir())
        entries = []
        for p in found:
            rel = p.relative_to(self.hub.root).as_posix()
            if p.is_dir():
                entries.append({"type": "directory", "oid": hashlib.sha1(rel.encode()).hexdigest(), "size": 0,
                                "path": rel})
            else:
                entries.append({"type": "file", "oid": hashlib.sha1(rel.encode()).hexdigest(),
                                "size": p.stat().st_size, "path": rel})
        start = int(query.get("cursor", ["0"])[0])
        page = entries[start:start + self.hub.page_size]
        headers = {}
        if start + self.hub.page_size < len(entries):
            nxt = (f"http://{self.headers.get('Host')}{urlsplit(self.path).path}?recursive={str(recursive).lower()}"
                   f"&expand=false&cursor={start + self.hub.page_size}")
            headers["Link"] = f'<{nxt}>; rel="next"'
        self._json(page, headers, head)

    def _json(self, obj: object, headers: dict[str, str] | None = None, head: bool = False) -> None:
        self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})}, head=head)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client closing its connection early (as `cut_once` provokes) is no server error."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FakeHub:
    """A threaded server for `root` on 127.0.0.1 (see the module docstring); a context manager."""

    sha = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, root: str | Path, *, latency_s: float = 0.0, page_size: int = 1000):
        self.root = Path(root).resolve()
        self.latency_s = latency_s
        self.page_size = page_size
        self.flaky = self.cut_once = self.ignore_range = self.redirect = self.gated = False
        self.token: str | None = None
        self.statuses: dict[str, int] = {}
        self.cdn_host, self.cdn_uses = "localhost", 1_000_000
        self.cdn_left: dict[str, int] = {}
        self.signatures = 0
        self.requests: list[Request] = []
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = _Server(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def resolve_url(self, repo: str, path: str = "", rev: str = "main") -> str:
        return f"{self.url}/datasets/{repo}/resolve/{quote(rev, safe='')}" + (f"/{path}" if path else "")

    def reset(self) -> None:
        """Forget recorded requests and which files were already served (for flaky/cut_once)."""
        with self.lock:
            self.requests.clear()
            self.seen.clear()

    def start(self) -> "FakeHub":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.fake_hub", description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, type=Path, help="folder to serve as the repository")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every request")
    a = p.parse_args(argv)
    with FakeHub(a.root, latency_s=a.latency_ms / 1000) as hub:
        print(f"serving {a.root} at {hub.url} (HF_ENDPOINT={hub.url}, e.g. hf://datasets/o/n); Ctrl-C stops",
              flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
