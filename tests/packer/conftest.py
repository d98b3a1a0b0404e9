"""Fixtures of the packer tests."""

from __future__ import annotations

import errno
from typing import Callable

import pytest

from packer import tarwriter


@pytest.fixture
def disk_full_at(monkeypatch) -> Callable[[int], Callable[[], None]]:
    """`disk_full_at(n)`: the n-th shard write from now on fails with ENOSPC, as a full disk would.

    Returns `restore()`, after which shards are written normally again (to rerun and resume).
    """
    real_write = tarwriter.ShardFile.write

    def arm(n: int) -> Callable[[], None]:
        calls = {"n": 0}

        def failing_write(self, chunks):
            calls["n"] += 1
            if calls["n"] == n:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(self, chunks)

        monkeypatch.setattr(tarwriter.ShardFile, "write", failing_write)
        return lambda: monkeypatch.setattr(tarwriter.ShardFile, "write", real_write)

    return arm
