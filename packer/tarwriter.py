"""A minimal deterministic tar writer that reports where every member's bytes land.

Headers have fixed mtime/uid/gid/uname/gname/mode, so the same members always give the same bytes;
the offsets returned go into the index (one ranged read per sample or per member).
"""

from __future__ import annotations

import hashlib
import tarfile
from typing import BinaryIO

BLOCK = 512


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


class HashingTarWriter:
    """Appends members to a binary file, hashing everything written (sha256 of the whole tar)."""

    def __init__(self, fileobj: BinaryIO):
        self.f = fileobj
        self.offset = 0
        self.sha = hashlib.sha256()

    def _write(self, data: bytes) -> None:
        self.f.write(data)
        self.sha.update(data)
        self.offset += len(data)

    def add(self, name: str, data: bytes) -> tuple[int, int]:
        """Write one member; returns (offset of its data, size of its data)."""
        self._write(member_header(name, len(data)))
        start = self.offset
        self._write(data)
        self._write(padding(len(data)))
        return start, len(data)

    def finish(self) -> None:
        """End-of-archive marker: two zero blocks."""
        self._write(b"\0" * (2 * BLOCK))
