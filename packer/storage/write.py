"""Where a pack's results go: a local folder, or an `s3://bucket/prefix` on any S3-compatible store.

The packer writes every shard to a local file first (`<work>/<rel>.partial`), then `put`s it into
place when it is complete: a rename in a local folder, an upload (multipart for large shards) to
object storage, where an object only becomes visible once its upload has finished. Small files
(resume sidecars, `params.json`, `manifest.json`) are written whole with `write_text`. So the
rules of docs/packing.md hold for both: nothing incomplete under a final name, sidecar after shard,
manifest last, and a rerun resumes from what the store holds (for S3, on any machine: the resume
state lives in the bucket under `<prefix>/.pack/`; the local staging folder only holds the shard
being written).

S3 endpoint and credentials come from the environment, as for the loader (`packer.storage.s3`).
Every S3 operation is retried through an outage by the loader's rule (`packer.storage.retry`,
`flair-pack --retries`): an upload is redone whole, and an object only appears once complete.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO

from packer.atomic import write_text_atomic
from packer.errors import PackError, naming
from packer.storage import retry
from packer.storage.s3 import no_bucket, s3_bucket, s3_endpoint, s3_filesystem, s3_path


class OutputStore(ABC):
    """A tree of files addressed by relative POSIX paths, plus a local `work` folder to build them in."""

    url: str
    work: Path

    def local(self, rel: str) -> Path:
        """Where the file `rel` is built locally before `put`."""
        return self.work / rel

    @abstractmethod
    def size(self, rel: str) -> int | None:
        """Size in bytes, or None when there is no such file."""

    def exists(self, rel: str) -> bool:
        return self.size(rel) is not None

    @abstractmethod
    def read_text(self, rel: str) -> str: ...

    @abstractmethod
    def entries(self) -> list[str]:
        """Names of the files and folders at the top of the store (none when it does not exist yet)."""

    @abstractmethod
    def open(self, rel: str) -> BinaryIO:
        """A seekable binary reader of `rel` (FileNotFoundError when absent)."""

    @abstractmethod
    def write_text(self, rel: str, text: str) -> None:
        """Replace `rel` with `text` in one step: readers see the old file, none, or all of the new."""

    @abstractmethod
    def put(self, local: Path, rel: str) -> None:
        """Move the complete local file `local` to `rel` (it is gone from `local` afterwards)."""

    @abstractmethod
    def delete(self, rel: str) -> None:
        """Remove `rel` if present."""

    def __str__(self) -> str:
        return self.url


class LocalStore(OutputStore):
    def __init__(self, out: str | os.PathLike, create: bool = True):
        self.work = Path(out)
        self.url = str(self.work)
        if create:
            self.work.mkdir(parents=True, exist_ok=True)

    def size(self, rel: str) -> int | None:
        path = self.work / rel
        return path.stat().st_size if path.is_file() else None

    def read_text(self, rel: str) -> str:
        return (self.work / rel).read_text()

    def entries(self) -> list[str]:
        return sorted(p.name for p in self.work.iterdir()) if self.work.is_dir() else []

    def open(self, rel: str) -> BinaryIO:
        return open(self.work / rel, "rb")

    def write_text(self, rel: str, text: str) -> None:
        with naming(self.work / rel):
            write_text_atomic(self.work / rel, text)

    def put(self, local: Path, rel: str) -> None:
        final = self.work / rel
        if Path(local) != final:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(local, final)

    def delete(self, rel: str) -> None:
        (self.work / rel).unlink(missing_ok=True)


class S3Store(OutputStore):
    """`s3://bucket/prefix`, through s3fs (already a dependency of the loader)."""

    upload_chunk = 50 * 2**20
    """Part size of multipart uploads; s3fs uploads files of 2 parts or more that way (256 MB shards do)."""

    def __init__(self, url: str, staging: str | os.PathLike | None = None, create: bool = True,
                 retries: int = retry.DEFAULT_ATTEMPTS):
        self.url = url.rstrip("/")
        bucket = s3_bucket(self.url)
        if not bucket:
            raise PackError("--out", no_bucket(url))
        default = Path(tempfile.gettempdir()) / f"flair-pack-{hashlib.sha1(self.url.encode()).hexdigest()[:12]}"
        self.work = Path(staging) if staging is not None else default
        if create:
            self.work.mkdir(parents=True, exist_ok=True)
        self.retries = retries
        self.fs = s3_filesystem(attempts=retries)
        endpoint = s3_endpoint() or "AWS"
        try:
            self._retried(lambda: self.fs.ls(bucket, refresh=True), f"s3://{bucket} (endpoint {endpoint})")
        except (FileNotFoundError, PermissionError, OSError) as exc:
            raise PackError("--out", f"{url}: bucket {bucket!r} cannot be listed ({exc})") from None

    def _retried(self, fn, what: str):
        """`fn()` through an outage (`packer.storage.retry`); PackError naming `what` once out of attempts."""
        return retry.with_retries(fn, what, self.retries, give_up=PackError)

    def _key(self, rel: str) -> str:
        return f"{s3_path(self.url)}/{rel.lstrip('/')}"

    def size(self, rel: str) -> int | None:
        key = self._key(rel)

        def info() -> int | None:
            self.fs.invalidate_cache(key)
            try:
                return int(self.fs.info(key)["size"])
            except FileNotFoundError:
                return None
        return self._retried(info, f"s3://{key}")

    def read_text(self, rel: str) -> str:
        return self._retried(lambda: self.fs.cat_file(self._key(rel)), f"s3://{self._key(rel)}").decode("utf-8")

    def entries(self) -> list[str]:
        prefix = s3_path(self.url)

        def ls() -> list[str]:
            try:
                return self.fs.ls(prefix, refresh=True)
            except FileNotFoundError:
                return []
        if "/" not in prefix:  # the whole bucket
            return sorted(k.rsplit("/", 1)[-1] for k in self._retried(ls, self.url))
        return sorted(k[len(prefix) + 1:].split("/", 1)[0] for k in self._retried(ls, self.url) if k != prefix)

    def open(self, rel: str) -> BinaryIO:
        return self.fs.open(self._key(rel), "rb", block_size=8 * 2**20)  # 8 MB range reads, read ahead

    def write_text(self, rel: str, text: str) -> None:
        data = text.encode("utf-8")
        self._retried(lambda: self.fs.pipe_file(self._key(rel), data), f"s3://{self._key(rel)}")  # one PUT

    def put(self, local: Path, rel: str) -> None:
        def upload() -> None:  # redone whole on failure: the object appears only once complete
            self.fs.put_file(str(local), self._key(rel), chunksize=self.upload_chunk)
        self._retried(upload, f"s3://{self._key(rel)}")
        if self.size(rel) != Path(local).stat().st_size:
            raise PackError(self._key(rel), "upload incomplete: the object's size differs from the local file")
        Path(local).unlink()

    def delete(self, rel: str) -> None:
        def rm() -> None:
            try:
                self.fs.rm_file(self._key(rel))
            except FileNotFoundError:
                pass
        self._retried(rm, f"s3://{self._key(rel)}")


def open_store(out: str | os.PathLike | OutputStore, staging: str | os.PathLike | None = None,
               create: bool = True, retries: int = retry.DEFAULT_ATTEMPTS) -> OutputStore:
    """`s3://...` -> S3Store (staging folder for the shard being written), anything else a local folder.

    `create=False` opens an existing dataset to read it (verify, inspect): no folder is made.
    """
    if isinstance(out, OutputStore):
        return out
    text = str(out)
    if text.startswith("s3://"):
        return S3Store(text, staging, create, retries)
    if "://" in text:
        raise PackError("--out", f"{text}: only local folders and s3:// URLs are supported")
    if staging is not None:
        raise PackError("--staging", "only used with an s3:// --out (a local --out is its own staging folder)")
    return LocalStore(text, create)
