"""Fixtures of the packer tests."""

from __future__ import annotations

import errno
from typing import Callable

import pytest

from packer.shardformat import writer as tarwriter


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


@pytest.fixture(scope="session")
def same_pack():
    """`same_pack(a, b)`: two packed outputs hold the same bytes, and their manifests differ at most
    in `parameters.src` and `parameters.src_list` (where the source was: a folder, zips, a URL, and
    the list of its zips), their dataset cards at most in the `source` row of the pack options.
    Returns the two `src` values."""
    import filecmp
    import json

    from packer import schema
    from packer.pack import STATE_DIR

    def check(a, b) -> tuple[str, str]:
        def files(out):
            return sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and STATE_DIR not in p.parts)

        names = files(a)
        assert names == files(b)
        assert any(str(n).endswith(".tar") for n in names)
        def card(out):
            return [line for line in (out / schema.CARD_FILE).read_text().splitlines() if not line.startswith("| source |")]

        for n in names:
            if str(n) == schema.CARD_FILE:
                assert card(a) == card(b)
            elif str(n) != schema.MANIFEST_FILE:
                assert filecmp.cmp(a / n, b / n, shallow=False), n
        ma, mb = (json.loads((o / schema.MANIFEST_FILE).read_text()) for o in (a, b))
        src = ma["parameters"].pop("src"), mb["parameters"].pop("src")
        ma["parameters"].pop("src_list"), mb["parameters"].pop("src_list")
        assert ma == mb
        return src

    return check
