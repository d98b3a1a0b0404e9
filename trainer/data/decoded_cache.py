"""Opt-in local cache of decoded members (`data.decoded_cache`): later epochs read no shard and
decompress nothing.

What Mosaic streaming does by default (it keeps decompressed copies of its shards after the first
pass) is an option here, never the default: it trades local disk (about 2.5x the shards) for
CPU and, with remote shards, for the network. The first epoch decodes members as usual and writes
each one's decompressed payload (the `.npy` file, or the JSON bytes) to the cache; every later
read of that member takes the payload from the cache instead of the shard, with one read into the
caller's arena and no decompression.

Layout: `<dir>/<shard sha256>/<member offset>.<npy|json>`. A shard's sha256 (from the manifest)
names its content, so entries of a rebuilt or different pack can never be mistaken for this one's,
and ranks and workers of a node (and several runs) share one directory safely: entries are written
to a temporary name and renamed into place. Each entry ends with the xxh3_64 of its payload,
checked on every read; a damaged entry is dropped, logged, and the member is read from its shard
again (the shards stay the truth). The cache stops adding entries while the file system has less
than `min_free_bytes` free, so it never fills a node's disk; it never deletes what it wrote (remove
the directory to reclaim the space).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import xxhash

TRAILER = 8
log = logging.getLogger(__name__)


class DecodedCacheError(OSError):
    """The cache directory cannot be used (one line naming it)."""


class DecodedCache:
    """Decoded member payloads on local disk, keyed by (shard sha256, member offset)."""

    def __init__(self, root: str | Path, min_free_bytes: int) -> None:
        self.root = Path(root).expanduser()
        self.min_free_bytes = int(min_free_bytes)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-", delete=True)
            probe.close()
        except OSError as exc:
            raise DecodedCacheError(f"data.decoded_cache: cannot write to {self.root} ({exc.strerror or exc})") from None
        self.hits = self.written = self.damaged = 0
        self._full = False

    def path(self, shard_sha256: str, offset: int, kind: str) -> Path:
        return self.root / shard_sha256 / f"{int(offset)}.{kind}"

    def get(self, shard_sha256: str, offset: int, kind: str, into: Callable[[int], memoryview]) -> memoryview | None:
        """The payload of a member, read into `into(nbytes)` (a writable buffer), or None if not cached."""
        path = self.path(shard_sha256, offset, kind)
        try:
            with open(path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size - TRAILER
                if size < 0:
                    raise ValueError("shorter than its checksum")
                buf = into(size + TRAILER)
                got = 0
                while got < size + TRAILER:
                    n = f.readinto(buf[got:])
                    if not n:
                        raise ValueError(f"truncated at {got} of {size + TRAILER} bytes")
                    got += n
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._drop(path, str(exc))
            return None
        payload = buf[:size]
        want = int.from_bytes(bytes(buf[size:size + TRAILER]), "little")
        if xxhash.xxh3_64_intdigest(payload) != want:
            self._drop(path, "xxh3_64 of its payload differs from the one written with it")
            return None
        self.hits += 1
        return payload

    def put(self, shard_sha256: str, offset: int, kind: str, *parts: memoryview | bytes) -> bool:
        """Store a member's payload, given as consecutive parts (False when the disk is too full or
        the write fails: reading goes on from the shards)."""
        if self._full or not self._room():
            return False
        final = self.path(shard_sha256, offset, kind)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)  # one stat when it exists, beside MBs written
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.")
            try:
                digest = xxhash.xxh3_64()
                with os.fdopen(fd, "wb") as f:
                    for part in parts:
                        f.write(part)
                        digest.update(part)
                    f.write(digest.intdigest().to_bytes(TRAILER, "little"))
                os.replace(tmp, final)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError as exc:
            log.warning("data.decoded_cache: cannot write %s (%s); reading on from the shards", final, exc)
            self._full = True
            return False
        self.written += 1
        return True

    def _room(self) -> bool:
        """Whether the file system keeps `min_free_bytes` free (checked every 64 writes)."""
        if self.written % 64:
            return True
        free = shutil.disk_usage(self.root).free
        if free < self.min_free_bytes:
            if not self._full:
                log.warning("data.decoded_cache: %s has %.1f GB free, under the %.1f GB to keep free; "
                            "no more entries are added", self.root, free / 1e9, self.min_free_bytes / 1e9)
            self._full = True
            return False
        return True

    def drop(self, shard_sha256: str, offset: int, kind: str, why: str) -> None:
        """Remove an entry whose payload turned out unusable (it is then read from its shard)."""
        self._drop(self.path(shard_sha256, offset, kind), why)

    def _drop(self, path: Path, why: str) -> None:
        self.damaged += 1
        log.warning("data.decoded_cache: %s is damaged (%s); dropped, the member is read from its shard", path, why)
        try:
            path.unlink()
        except OSError:
            pass
