"""Writing shards: a sample's members (`sample_members`) and a minimal deterministic tar writer
that reports where every member's bytes land.

Headers have fixed mtime/uid/gid/uname/gname/mode, so the same members always give the same bytes;
the offsets go into the index (one ranged read per sample or per member). Laying members out
(`TarLayout`, offsets known at once) is separate from writing their bytes (`ShardFile`), so the
writing, hashing and syncing can run on a background thread (`packer.ordered_io`) while the
caller goes on encoding.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from packer.shardformat.columns import checksum_column
from packer.shardformat.encoding import encode_array, encode_json, member_checksum, member_suffix
from packer.shardformat.names import META_SUFFIX, member_name, meta_member_name

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
SYNC_EVERY = 32 * 2**20
"""`ShardFile` flushes to disk every this many bytes, so closing a 256 MB shard never waits for all of it."""


def sample_members(patch_id: str, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                   settings: Mapping[str, Mapping[str, Any]]) -> tuple[list[tuple[str, bytes]], dict[str, int]]:
    """One sample's tar members in shard order (the JSON metadata first, then `arrays` in their
    order), each array encoded with its modality's setting (and named by the suffix that setting
    writes), and the index's checksum columns of their stored bytes."""
    members = [(meta_member_name(patch_id), encode_json(meta))]
    for name, arr in arrays.items():
        members.append((member_name(patch_id, name, member_suffix(settings[name])), encode_array(arr, settings[name])))
    keys = [META_SUFFIX, *arrays]
    return members, {checksum_column(key): member_checksum(data) for key, (_, data) in zip(keys, members)}


def member_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="strict")


def padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


MemberBlocks = tuple[bytes, bytes, bytes]
"""A member as it lies in the tar: header, data, padding to the next 512-byte block."""


def member_blocks(name: str, data: bytes) -> MemberBlocks:
    return member_header(name, len(data)), data, padding(len(data))


class TarLayout:
    """Where members go in a tar being built: their bytes to write and their data offsets."""

    def __init__(self) -> None:
        self.offset = 0

    def add(self, blocks: MemberBlocks, chunks: list[bytes]) -> tuple[int, int]:
        """Append the member's blocks to `chunks`; returns (data offset, data size)."""
        header, data, pad = blocks
        chunks += blocks
        start = self.offset + len(header)
        self.offset = start + len(data) + len(pad)
        return start, len(data)

    def end(self) -> bytes:
        """The end-of-archive marker (two zero blocks), counted in the offset."""
        self.offset += len(END_OF_ARCHIVE)
        return END_OF_ARCHIVE


class ShardFile:
    """The bytes of one shard on disk: written in order, hashed (sha256 of the whole tar), synced.

    Used from one thread at a time (the I/O thread); `close` leaves a durable file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.f = open(self.path, "wb")
        self.sha = hashlib.sha256()
        self.bytes = 0
        self._unsynced = 0

    def write(self, chunks: list[bytes]) -> None:
        for data in chunks:
            self.f.write(data)
            self.sha.update(data)
            self.bytes += len(data)
            self._unsynced += len(data)
        if self._unsynced >= SYNC_EVERY:
            self.f.flush()
            os.fdatasync(self.f.fileno())
            self._unsynced = 0

    def close(self) -> str:
        """Flush and fsync; returns the sha256 hex digest."""
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        return self.sha.hexdigest()

    def discard(self) -> None:
        """Close without syncing and delete the file (an aborted shard)."""
        self.f.close()
        self.path.unlink(missing_ok=True)
