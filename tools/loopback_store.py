"""A folder served over HTTP on 127.0.0.1, as slow as a remote store: latency, bandwidth, a gate.

    python -m tools.loopback_store shards/ --latency-ms 20 --bandwidth-mbps 400 --port 8765

The loader's `https://` source (`packer.storage.read.HttpSource`) reads it like any web host or
the Hub's resolve URLs: HEAD for sizes, GET with `Range: bytes=a-b`. What it adds to a plain file
server, for benchmarks (`tools/validate_simulator.py`) and tests (the two-node run):

- `latency_s`: every request waits this long before its first byte (the round trip and the
  store's time to first byte); concurrent requests wait concurrently, as with a real store;
- `bandwidth` (bytes/s): one link shared by all connections; response bodies are sent in 64 KiB
  chunks, each reserving its slot on the link in arrival order;
- `gate`: a `threading.Event`; while it is cleared, requests are held (a store that stalls), so a
  test can stop every client at a known point;
- counters of requests and body bytes served.

Paths are resolved inside the folder (anything else is a 404); HTTP/1.1 keep-alive.
"""

from __future__ import annotations

import argparse
import http.server
import re
import sys
import threading
import time
from pathlib import Path

CHUNK = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class Link:
    """A shared link of `bandwidth` bytes/s: senders take turns, each for as long as its chunk needs."""

    def __init__(self, bandwidth: float | None) -> None:
        self.bandwidth = bandwidth
        self._free_at = 0.0
        self._lock = threading.Lock()

    def send_time(self, nbytes: int) -> None:
        """Block until `nbytes` have had their turn on the link."""
        if not self.bandwidth:
            return
        with self._lock:
            start = max(time.monotonic(), self._free_at)
            self._free_at = start + nbytes / self.bandwidth
            done = self._free_at
        delay = done - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that went away (killed, timed out) is not an error of the store."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class LoopbackStore:
    """Serve `root` on 127.0.0.1 in a background thread (a context manager; see the module docstring)."""

    def __init__(self, root: str | Path, latency_s: float = 0.0, bandwidth: float | None = None, port: int = 0,
                 host: str = "127.0.0.1") -> None:
        self.root = Path(root).resolve()
        self.latency_s = latency_s
        self.link = Link(bandwidth)
        self.gate = threading.Event()
        self.gate.set()
        self.requests = 0
        self.bytes_sent = 0
        self.held = 0  # requests waiting at the closed gate
        self._count_lock = threading.Lock()
        store = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                store._serve(self, body=False)

            def do_GET(self) -> None:
                store._serve(self, body=True)

        self.server = _Server((host, port), Handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "LoopbackStore":
        self._thread = threading.Thread(target=self.server.serve_forever, name="loopback-store", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.gate.set()  # release held requests so their threads end
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "LoopbackStore":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- serving
    def _file(self, url_path: str) -> Path | None:
        rel = url_path.split("?", 1)[0].lstrip("/")
        f = (self.root / rel).resolve()
        return f if f.is_file() and self.root in f.parents else None

    def _serve(self, h: http.server.BaseHTTPRequestHandler, body: bool) -> None:
        if not self.gate.is_set():
            with self._count_lock:
                self.held += 1
            self.gate.wait()
            with self._count_lock:
                self.held -= 1
        with self._count_lock:
            self.requests += 1
        if self.latency_s:
            time.sleep(self.latency_s)
        f = self._file(h.path)
        if f is None:
            h.send_error(404)
            return
        size = f.stat().st_size
        start, end = 0, size - 1
        rng = h.headers.get("Range")
        status = 200
        if rng:
            m = _RANGE.match(rng.strip())
            if not m or int(m.group(1)) >= size:
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{size}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            status = 206
        length = end - start + 1
        h.send_response(status)
        h.send_header("Content-Length", str(length))
        h.send_header("Accept-Ranges", "bytes")
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        h.end_headers()
        if not body:
            return
        try:
            with open(f, "rb") as fh:
                fh.seek(start)
                left = length
                while left:
                    data = fh.read(min(CHUNK, left))
                    self.link.send_time(len(data))
                    h.wfile.write(data)
                    left -= len(data)
                    with self._count_lock:
                        self.bytes_sent += len(data)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (killed, timed out)
            h.close_connection = True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.loopback_store", description=__doc__.split("\n\n")[0],
                                epilog="example: python -m tools.loopback_store shards/ --latency-ms 20 --bandwidth-mbps 400")
    p.add_argument("root", type=Path, help="folder to serve (e.g. a packed dataset)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--latency-ms", type=float, default=0.0, help="wait before each response (default 0)")
    p.add_argument("--bandwidth-mbps", type=float, default=0.0, help="shared link in megabits/s (default: unlimited)")
    args = p.parse_args(argv)
    if not args.root.is_dir():
        print(f"loopback_store: error: {args.root}: no such folder", file=sys.stderr)
        return 2
    store = LoopbackStore(args.root, args.latency_ms / 1000, args.bandwidth_mbps * 1e6 / 8 or None, args.port)
    print(f"serving {store.root} at {store.url} (Ctrl-C stops)", flush=True)
    try:
        store.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        store.server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
