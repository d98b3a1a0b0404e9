"""Byte ranges of a source file, local or over HTTP: what reading zips in place needs.

`reader_for(location)` gives, once per process, a reader for a local path (positional reads on one
open descriptor) or an `http(s)://` URL (range requests on one pooled session). Both answer
`read(offset, length)` (short only at the end of the file) and `tail(length)` (the last bytes and
the file's size, for a zip's end-of-central-directory record).

HTTP specifics, all with one-line errors naming the URL:
- transient failures (connection errors, timeouts, HTTP 429/5xx, a body cut short) are retried
  with exponential backoff and jitter (`Retry-After` honoured up to 30 s), then fail the run;
- 401/403/404 fail at once and say whether `$HF_TOKEN` was sent (it goes to the Hub endpoint's
  host only; the requests library drops it when the Hub redirects to its CDN);
- a server that answers a range request with the whole file (HTTP 200) is refused before its body
  is read: packing a 5 GB zip one member at a time would otherwise download it per member;
- the final URL of a redirect (the Hub's signed CDN URL) is remembered per file, so a member costs
  one request instead of two; when that URL expires (401/403/404/410), the resolve URL is asked again.

Every request and every byte received is counted (`fetch_stats()`), per process, so the packer can
report requests and bytes per patch.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

from packer.errors import PackError
from packer.hub import auth_headers, hf_endpoint, token_note

RETRIES = 6
BASE_DELAY_S = 0.25
MAX_DELAY_S = 8.0
TIMEOUT_S = (15.0, 120.0)  # connect, read
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class RemoteError(PackError):
    """A remote read failed for good (refused, missing, out of retries): stops the run; rerun to resume."""


class RangeUnsupported(RemoteError):
    """The server ignores `Range` (answers 200 with the whole file)."""


@dataclass
class FetchStats:
    requests: int = 0
    bytes: int = 0

    def __sub__(self, other: "FetchStats") -> "FetchStats":
        return FetchStats(self.requests - other.requests, self.bytes - other.bytes)


_STATS = FetchStats()
_STATS_LOCK = threading.Lock()


def _count(requests: int, nbytes: int) -> None:
    with _STATS_LOCK:
        _STATS.requests += requests
        _STATS.bytes += nbytes


def fetch_stats() -> FetchStats:
    """Requests made and bytes received by this process so far (local reads count as requests too)."""
    with _STATS_LOCK:
        return FetchStats(_STATS.requests, _STATS.bytes)


class RangeReader(ABC):
    """Read-only random access to one file."""

    location: str

    @abstractmethod
    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset`: fewer only where the file ends."""

    @abstractmethod
    def tail(self, length: int) -> tuple[bytes, int]:
        """(the last `length` bytes, or the whole file if shorter; the file's size)."""


    def close(self) -> None:
        """Release what the reader holds (it reopens on the next read)."""


class LocalFile(RangeReader):
    def __init__(self, path: str):
        self.location = path
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _descriptor(self) -> int:
        with self._lock:
            if self._fd is None:
                try:
                    self._fd = os.open(self.location, os.O_RDONLY)
                except OSError as exc:
                    raise PackError(self.location, f"cannot open ({exc.strerror})") from None
            return self._fd

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._descriptor(), length, offset)
        _count(1, len(data))
        return data

    def tail(self, length: int) -> tuple[bytes, int]:
        size = os.fstat(self._descriptor()).st_size
        start = max(0, size - length)
        return self.read(start, size - start), size


class HttpStatusError(RemoteError):
    """An HTTP status that retrying will not change (4xx); `status` says which."""

    def __init__(self, path: object, problem: str, status: int):
        self.status = status
        super().__init__(path, problem)

    def __reduce__(self):
        return type(self), (self.path, self.problem, self.status)


def http_get(url: str, headers: dict[str, str], what: str | None = None, retries: int = RETRIES,
             base_delay: float = BASE_DELAY_S):
    """GET `url` (streamed), retrying transient failures; returns a response whose status is below
    400 or is 416, or raises (HttpStatusError for other 4xx, RemoteError when out of retries).

    `what` names the file in messages (default `url`). The caller closes the response.
    """
    import requests

    what = what or url
    last = ""
    for attempt in range(retries):
        try:
            resp = shared_session().get(url, headers=headers, stream=True, timeout=TIMEOUT_S)
        except (requests.ConnectionError, requests.Timeout) as exc:
            _count(1, 0)
            last = f"{type(exc).__name__}: {exc}"
            _backoff(attempt, retries, base_delay, None)
            continue
        _count(1 + len(resp.history), 0)
        status = resp.status_code
        if status == 429 or status >= 500:
            last = f"HTTP {status} {resp.reason}"
            resp.close()
            _backoff(attempt, retries, base_delay, resp.headers.get("Retry-After"))
            continue
        if status >= 400 and status != 416:
            resp.close()
            note = f" ({token_note()})" if status in (401, 403, 404) else ""
            raise HttpStatusError(what, f"HTTP {status} {resp.reason}{note}", status)
        return resp
    raise RemoteError(what, f"failed after {retries} attempts ({last})")


def _backoff(attempt: int, retries: int, base_delay: float, retry_after: str | None) -> None:
    if attempt == retries - 1:
        return
    delay = min(MAX_DELAY_S, base_delay * 2 ** attempt) * (0.5 + random.random())
    if retry_after and retry_after.strip().isdigit():
        delay = max(delay, min(30.0, float(retry_after)))
    time.sleep(delay)


def request_headers(url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """`extra`, plus the Hub token when `url` is on the Hub endpoint's host (never elsewhere)."""
    headers = dict(extra or {})
    if urlsplit(url).netloc == urlsplit(hf_endpoint()).netloc:
        headers.update(auth_headers())
    return headers


class HttpFile(RangeReader):
    """An `http(s)://` file read with range requests (see the module docstring)."""

    def __init__(self, url: str, retries: int = RETRIES, base_delay: float = BASE_DELAY_S):
        self.location = url
        self.retries = retries
        self.base_delay = base_delay
        self._direct: str | None = None  # where the last redirect led (a signed CDN URL)

    def read(self, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        body, _ = self._get(f"bytes={offset}-{offset + length - 1}", offset, length)
        return body

    def tail(self, length: int) -> tuple[bytes, int]:
        return self._get(f"bytes=-{length}", None, length)

    def _open(self, rng: str):
        """The response to one range request: through the remembered redirect target if any."""
        direct = self._direct
        url = direct or self.location
        try:
            resp = http_get(url, request_headers(url, {"Range": rng, "Accept-Encoding": "identity"}),
                            self.location, self.retries, self.base_delay)
        except HttpStatusError as exc:
            if direct is None or exc.status not in (401, 403, 404, 410):
                raise
            self._direct = None  # the signed URL expired: ask the resolve URL again
            return self._open(rng)
        if resp.history:
            self._direct = resp.url
        return resp

    def _get(self, rng: str, offset: int | None, length: int) -> tuple[bytes, int]:
        """(body, file size) of one range request; a body cut short is asked again."""
        import requests
        import urllib3

        last = ""
        for attempt in range(self.retries):
            with self._open(rng) as resp:
                if resp.status_code == 416:
                    return b"", _total_size(resp.headers.get("Content-Range"))
                if resp.status_code == 206:
                    m = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range", ""))
                    if not m or (offset is not None and int(m[1]) != offset):
                        raise RemoteError(self.location, f"bad Content-Range {resp.headers.get('Content-Range')!r} "
                                                         f"for Range {rng}")
                    expected, total = int(m[2]) - int(m[1]) + 1, (int(m[3]) if m[3] != "*" else -1)
                else:  # 200: the whole file, acceptable only when the whole file was asked for
                    size = int(resp.headers.get("Content-Length", -1))
                    if not (offset in (None, 0) and 0 <= size <= length):
                        raise RangeUnsupported(self.location, "the server ignored the Range header (HTTP 200 with "
                                               "the whole file): reading zips in place needs range requests; "
                                               "download the zips and pack the local folder instead")
                    expected = total = size
                try:
                    body = resp.raw.read(expected, decode_content=False) if expected else b""
                except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                    body, last = b"", f"{type(exc).__name__}: {exc}"
                _count(0, len(body))
                if len(body) == expected:
                    return body, total
                last = last or f"body cut short: {len(body)} of {expected} bytes"
            _backoff(attempt, self.retries, self.base_delay, None)
        raise RemoteError(self.location, f"failed after {self.retries} attempts ({last})")


def get_json(url: str) -> tuple[object, str | None]:
    """(decoded JSON body, the `Link: rel="next"` URL or None) of an API GET, with retries."""
    with http_get(url, request_headers(url, {"Accept": "application/json"})) as resp:
        if resp.status_code == 416:
            raise RemoteError(url, "HTTP 416 for a request without a range")
        body = resp.content
        _count(0, len(body))
        try:
            return resp.json(), resp.links.get("next", {}).get("url")
        except ValueError:
            raise RemoteError(url, f"the answer is not JSON ({body[:80]!r})") from None


def _total_size(content_range: str | None) -> int:
    m = re.match(r"^bytes \*/(\d+)$", content_range or "")
    return int(m[1]) if m else -1


_SESSION = None
_SESSION_PID = None
_SESSION_LOCK = threading.Lock()


def shared_session():
    """One pooled `requests.Session` per process (connections are reused across members and threads)."""
    global _SESSION, _SESSION_PID
    with _SESSION_LOCK:
        if _SESSION is None or _SESSION_PID != os.getpid():
            import requests
            from requests.adapters import HTTPAdapter

            s = requests.Session()
            adapter = HTTPAdapter(pool_connections=8, pool_maxsize=32, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            _SESSION, _SESSION_PID = s, os.getpid()
        return _SESSION


MAX_READERS = 256
"""Readers kept per process (each local one holds a descriptor; the real dataset has ~740 zips)."""
_READERS: OrderedDict[str, RangeReader] = OrderedDict()
_READERS_PID: int | None = None
_READERS_LOCK = threading.Lock()


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def reader_for(location: str) -> RangeReader:
    """The reader of `location` (a local path or an http(s) URL), one per process."""
    global _READERS_PID
    with _READERS_LOCK:
        if _READERS_PID != os.getpid():  # a forked child must not share its parent's descriptors
            _READERS.clear()
            _READERS_PID = os.getpid()
        reader = _READERS.get(location)
        if reader is None:
            reader = HttpFile(location) if is_url(location) else LocalFile(location)
            _READERS[location] = reader
            if len(_READERS) > MAX_READERS:
                _READERS.popitem(last=False)[1].close()
        else:
            _READERS.move_to_end(location)
        return reader
