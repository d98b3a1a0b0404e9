"""The opt-in decoded-member cache (`data.decoded_cache`): later epochs read neither shards nor
zstd, give the same batches, survive damaged entries and never fill the disk."""

from __future__ import annotations

import logging
import shutil
from collections import namedtuple

import pytest
import torch

from tests.loader_configs import REFERENCE_PREPROCESSING, SPOT_CUSTOM_NORM, loader_config
from trainer.data import StreamingLoader
from trainer.data.decoded_cache import TRAILER, DecodedCache, DecodedCacheError

INPUTS = {"SPOT_RGBI": [4, 1, 2], "SENTINEL2_TS": range(1, 11), "DEM_ELEV": []}
NORM = {**SPOT_CUSTOM_NORM, "DEM_ELEV_means": [400.0, 10.0], "DEM_ELEV_stds": [100.0, 5.0]}


def make(out, cache=None, workers=0, **data):
    cfg = loader_config(out, INPUTS, seed=2, batch_size=2, pre={**REFERENCE_PREPROCESSING, "use_augmentation": True},
                        norm=NORM, decode_threads=2, decoded_cache=str(cache) if cache else None,
                        decoded_cache_min_free_gb=0, **data)
    return StreamingLoader.from_config(cfg, "train", rank=0, world_size=1, num_workers=workers, shuffle=True)


def fingerprints(loader):
    return [(tuple(b["patch_id"]), tuple((k, v.numpy().tobytes()) for k, v in sorted(b.items()) if torch.is_tensor(v)))
            for b in loader]


class CountingReads:
    """Wraps a source and counts the bytes read from its shards."""

    def __init__(self, source):
        self.source, self.bytes = source, 0

    def __getattr__(self, name):
        return getattr(self.source, name)

    def read_range(self, path, start, length):
        self.bytes += length
        return self.source.read_range(path, start, length)


def test_cached_epochs_give_the_same_batches_and_read_no_shard(toy_shards, tmp_path):
    plain = make(toy_shards.out)
    want = [fingerprints(plain) for _ in range(2)]
    loader = make(toy_shards.out, tmp_path / "cache")
    counting = CountingReads(loader.dataset.reader.source)
    loader.dataset.reader.source = counting
    first = fingerprints(loader)
    first_bytes, counting.bytes = counting.bytes, 0
    second = fingerprints(loader)
    assert [first, second] == want
    assert first_bytes > 0 and counting.bytes == 0, "a cached epoch reads nothing from the shards"
    cache = loader.dataset.reader.cache
    assert cache.hits > 0 and cache.damaged == 0
    entries = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert entries and all(p.suffix in (".npy", ".json") for p in entries)


def test_workers_share_the_cache(toy_shards, tmp_path):
    want = fingerprints(make(toy_shards.out))
    loader = make(toy_shards.out, tmp_path / "cache", workers=2)
    assert fingerprints(loader) == want  # workers fill it
    assert fingerprints(make(toy_shards.out, tmp_path / "cache")) == want  # another loader reads it


def test_a_damaged_entry_is_dropped_and_read_from_the_shard(toy_shards, tmp_path, caplog):
    want = fingerprints(make(toy_shards.out))
    fingerprints(make(toy_shards.out, tmp_path / "cache"))
    victim = max((p for p in (tmp_path / "cache").rglob("*.npy")), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x10
    victim.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="trainer.data.decoded_cache"):
        loader = make(toy_shards.out, tmp_path / "cache")
        assert fingerprints(loader) == want
    assert loader.dataset.reader.cache.damaged == 1
    assert any(str(victim) in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    assert victim.is_file()  # written again from the shard


def test_entries_are_checksummed_payloads(tmp_path):
    cache = DecodedCache(tmp_path, min_free_bytes=0)  # whatever this host has free
    assert cache.put("ab" * 32, 1536, "npy", b"payload")
    raw = cache.path("ab" * 32, 1536, "npy").read_bytes()
    assert raw[:-TRAILER] == b"payload" and len(raw) == len(b"payload") + TRAILER
    got = cache.get("ab" * 32, 1536, "npy", lambda n: memoryview(bytearray(n)))
    assert bytes(got) == b"payload"
    assert cache.get("ab" * 32, 2048, "npy", lambda n: memoryview(bytearray(n))) is None
    truncated = cache.path("ab" * 32, 1536, "npy")
    truncated.write_bytes(raw[:3])
    assert cache.get("ab" * 32, 1536, "npy", lambda n: memoryview(bytearray(n))) is None and not truncated.exists()
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()], "no temporary file left"


def test_no_entry_is_added_under_the_free_space_floor(tmp_path, monkeypatch, caplog):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(100, 95, 5 << 30))
    cache = DecodedCache(tmp_path / "c", min_free_bytes=10 << 30)
    with caplog.at_level(logging.WARNING, logger="trainer.data.decoded_cache"):
        assert not cache.put("cd" * 32, 0, "npy", b"x")
    assert not list((tmp_path / "c").rglob("*.npy"))
    assert "no more entries are added" in caplog.text


def test_an_unusable_directory_is_one_line_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DecodedCacheError, match=f"data.decoded_cache: cannot write to {blocker}"):
        DecodedCache(blocker / "cache", min_free_bytes=0)

