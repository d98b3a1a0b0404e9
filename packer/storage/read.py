"""Where packed shards are read from: one small reader per URL scheme behind one function.

`open_source(url)` picks the reader from the URL prefix:

- a local directory (or `file://`),
- `s3://bucket/prefix` on any S3-compatible endpoint (s3fs; endpoint from the config or
  `$AWS_ENDPOINT_URL` / `$FLAIR_S3_ENDPOINT_URL`, credentials from the usual AWS variables),
- `https://host/path` (plain HTTP range requests),
- `hf://datasets/<owner>/<name>[@rev]/<path>`: the Hugging Face Hub's resolve URLs over HTTP, with
  a configurable base URL (`$HF_ENDPOINT`, so a mirror or a local server works) and `$HF_TOKEN`.

Every reader offers the same three operations: the size of a file, a byte range of it, and its
bytes as a stream of chunks. Reads are retried with backoff on transient errors (refused or reset
connections, timeouts, throttling, HTTP 5xx/429), `data.retries` attempts in all, by the rule of
`packer.storage.retry` that the packer's S3 uploads follow too (docs/reliability.md gives the outage each
setting rides out); a missing file or a refused request fails at once.
Readers hold no open handle when pickled, so they can be sent to DataLoader worker processes.
"""

from __future__ import annotations

import hashlib
import io
import os
from abc import ABC, abstractmethod
from typing import Callable, Iterator, TypeVar
from urllib.parse import urlsplit

from packer import hub
from packer.hub import auth_headers
from packer.storage import retry
from packer.storage.retry import RemoteError, TransientError
from packer.storage.s3 import no_bucket, s3_bucket, s3_endpoint, s3_filesystem, s3_path

T = TypeVar("T")

CHUNK = 1 << 22
SCHEMES = "a local path, s3://bucket/prefix, https://, http:// or hf://datasets/<owner>/<name>[@revision]/<path>"

__all__ = ["SourceError", "SourceURLError", "TransientError", "ShardIntegrityError", "Source", "open_source",
           "check_source_url", "hf_base_url", "check_shard", "with_retries", "SourceFile"]


class SourceError(RemoteError):
    """A read failed for good (not found, refused, or out of retries); the message names the URL."""


class SourceURLError(ValueError):
    """A source URL no reader handles, or a malformed one; the message names it."""


class ShardIntegrityError(RuntimeError):
    """A shard's bytes do not match the manifest (size or sha256); the message names its URL."""


def with_retries(fn: Callable[[], T], what: str, retries: int = retry.DEFAULT_ATTEMPTS) -> T:
    """Call `fn`, retrying transient failures with backoff (`packer.storage.retry`); SourceError when out of attempts."""
    return retry.with_retries(fn, what, retries, give_up=lambda url, problem: SourceError(f"{url}: {problem}"))


class Source(ABC):
    """A read-only tree of files addressed by relative POSIX paths."""

    def __init__(self, base: str, retries: int = retry.DEFAULT_ATTEMPTS) -> None:
        self.base = base.rstrip("/")
        self.retries = retries

    def url(self, rel: str) -> str:
        return f"{self.base}/{rel.lstrip('/')}"

    def size(self, rel: str) -> int:
        return with_retries(lambda: self._size(rel), self.url(rel), self.retries)

    def read_range(self, rel: str, start: int, length: int) -> bytes:
        """`length` bytes from `start`; a short read is an error (the file is shorter than the index says)."""
        def once() -> bytes:
            data = self._read_range(rel, start, length)
            if len(data) != length:
                raise SourceError(f"{self.url(rel)}: expected {length} bytes at {start}, got {len(data)}")
            return data
        return with_retries(once, self.url(rel), self.retries)

    def read_all(self, rel: str) -> bytes:
        return b"".join(self.iter_chunks(rel))

    def iter_chunks(self, rel: str, chunk: int = CHUNK) -> Iterator[bytes]:
        """The whole file as a stream of chunks (for verification and small files)."""
        size = self.size(rel)
        for start in range(0, size, chunk):
            yield self.read_range(rel, start, min(chunk, size - start))

    @abstractmethod
    def _size(self, rel: str) -> int: ...

    @abstractmethod
    def _read_range(self, rel: str, start: int, length: int) -> bytes: ...

    def __getstate__(self) -> dict:
        # Handles, sessions and clients are per process: rebuilt lazily after unpickling.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_h")}


class LocalSource(Source):
    """A directory on a local or network file system; positional reads on cached descriptors."""

    def __init__(self, base: str, retries: int = retry.DEFAULT_ATTEMPTS, max_open: int = 64) -> None:
        super().__init__(os.path.abspath(base), retries)
        self.max_open = max_open

    def _fds(self) -> dict[str, int]:
        if getattr(self, "_h_pid", None) != os.getpid():
            self._h_fds: dict[str, int] = {}
            self._h_pid = os.getpid()
        return self._h_fds

    def _fd(self, rel: str) -> int:
        fds = self._fds()
        fd = fds.get(rel)
        if fd is None:
            if len(fds) >= self.max_open:
                os.close(fds.pop(next(iter(fds))))
            fd = os.open(os.path.join(self.base, rel), os.O_RDONLY)
            fds[rel] = fd
        return fd

    def _size(self, rel: str) -> int:
        return os.stat(os.path.join(self.base, rel)).st_size

    def _read_range(self, rel: str, start: int, length: int) -> bytes:
        return os.pread(self._fd(rel), length, start)

    def iter_chunks(self, rel: str, chunk: int = CHUNK) -> Iterator[bytes]:
        with open(os.path.join(self.base, rel), "rb") as f:
            while block := f.read(chunk):
                yield block


class S3Source(Source):
    """`s3://bucket/prefix` through s3fs, on AWS or any S3-compatible endpoint."""

    def __init__(self, base: str, retries: int = retry.DEFAULT_ATTEMPTS, endpoint_url: str | None = None) -> None:
        super().__init__(base, retries)
        self.endpoint_url = s3_endpoint(endpoint_url)

    def _fs(self):
        if getattr(self, "_h_pid", None) != os.getpid():
            # One client per process: botocore sessions are not fork-safe.
            self._h_fs = s3_filesystem(self.endpoint_url, attempts=self.retries)
            self._h_pid = os.getpid()
        return self._h_fs

    def _path(self, rel: str) -> str:
        return s3_path(self.url(rel))

    def _size(self, rel: str) -> int:
        return int(self._fs().info(self._path(rel))["size"])

    def _read_range(self, rel: str, start: int, length: int) -> bytes:
        return self._fs().cat_file(self._path(rel), start=start, end=start + length)


class HttpSource(Source):
    """`https://...` (or `http://`) with Range requests; `headers` carry e.g. a Hub token."""

    def __init__(self, base: str, retries: int = retry.DEFAULT_ATTEMPTS, headers: dict[str, str] | None = None,
                 timeout: float = 60) -> None:
        super().__init__(base, retries)
        self.headers = dict(headers or {})
        self.timeout = timeout

    def _session(self):
        if getattr(self, "_h_pid", None) != os.getpid():
            import requests

            self._h_session = requests.Session()
            self._h_session.headers.update(self.headers)
            self._h_pid = os.getpid()
        return self._h_session

    def _check(self, resp, rel: str) -> None:
        if resp.status_code in (429,) or resp.status_code >= 500:
            raise TransientError(f"{self.url(rel)}: HTTP {resp.status_code}")
        if resp.status_code == 404:
            raise FileNotFoundError(f"{self.url(rel)}: HTTP 404 (not found)")
        if resp.status_code >= 400:
            raise SourceError(f"{self.url(rel)}: HTTP {resp.status_code}")

    def _size(self, rel: str) -> int:
        resp = self._session().head(self.url(rel), allow_redirects=True, timeout=self.timeout)
        self._check(resp, rel)
        if "Content-Length" not in resp.headers:
            raise SourceError(f"{self.url(rel)}: the server gives no Content-Length")
        return int(resp.headers["Content-Length"])

    def _read_range(self, rel: str, start: int, length: int) -> bytes:
        if length == 0:
            return b""
        headers = {"Range": f"bytes={start}-{start + length - 1}"}
        resp = self._session().get(self.url(rel), headers=headers, allow_redirects=True, timeout=self.timeout)
        self._check(resp, rel)
        if resp.status_code == 200:  # the server ignored Range: slice what we got
            return resp.content[start : start + length]
        return resp.content


class SourceFile(io.RawIOBase):
    """A read-only, seekable file over `Source.read_range` (with its retries), for ranged Parquet reads."""

    def __init__(self, source: Source, rel: str) -> None:
        super().__init__()
        self.source, self.rel = source, rel
        self.length = source.size(rel)
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.length - self.pos))
        if n:
            buffer[:n] = self.source.read_range(self.rel, self.pos, n)
            self.pos += n
        return n


def hf_base_url(url: str, endpoint: str | None = None) -> str:
    """`hf://datasets/<owner>/<name>[@rev]/<path>` -> its resolve URL (packer.hub's one parser);
    a malformed URL raises SourceURLError naming it."""
    try:
        return hub.hf_base_url(url, endpoint)
    except ValueError as exc:
        raise SourceURLError(str(exc)) from None


def check_source_url(url: str) -> None:
    """Refuse, without any I/O, a URL no reader handles or a malformed one (SourceURLError names it)."""
    if url.startswith("hf://"):
        hf_base_url(url, "https://huggingface.co")
    elif url.startswith("s3://"):
        if not s3_bucket(url):
            raise SourceURLError(no_bucket(url))
    elif url.startswith(("https://", "http://")):
        if not urlsplit(url).hostname:
            raise SourceURLError(f"{url}: no host name")
    elif "://" in url and not url.startswith("file://"):
        raise SourceURLError(f"{url}: unsupported scheme (use {SCHEMES})")


def open_source(url: str, retries: int = retry.DEFAULT_ATTEMPTS, s3_endpoint_url: str | None = None,
                hf_endpoint: str | None = None) -> Source:
    """The reader for `url`, chosen by its prefix (see the module docstring)."""
    check_source_url(url)
    if url.startswith("s3://"):
        return S3Source(url, retries, endpoint_url=s3_endpoint_url)
    if url.startswith("hf://"):
        return HttpSource(hf_base_url(url, hf_endpoint), retries, headers=auth_headers())
    if url.startswith(("https://", "http://")):
        return HttpSource(url, retries)
    if url.startswith("file://"):
        url = url[len("file://"):]
    if not os.path.isdir(url):
        raise FileNotFoundError(f"{url}: no such directory")
    return LocalSource(url, retries)


def check_shard(source: Source, rel: str, expected_bytes: int, expected_sha256: str | None, full: bool) -> None:
    """Compare a shard with its manifest entry: the size always, the sha256 when `full`.

    Raises ShardIntegrityError naming the shard's URL, so a corrupted or truncated upload is
    reported where it is instead of as a decoding error far downstream.
    """
    size = source.size(rel)
    if size != expected_bytes:
        raise ShardIntegrityError(f"{source.url(rel)}: {size} bytes, manifest says {expected_bytes}")
    if not full or not expected_sha256:
        return
    h = hashlib.sha256()
    for block in source.iter_chunks(rel):
        h.update(block)
    if h.hexdigest() != expected_sha256:
        raise ShardIntegrityError(f"{source.url(rel)}: sha256 {h.hexdigest()} != manifest {expected_sha256}")
