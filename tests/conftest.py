"""Shared fixtures: small synthetic FLAIR-HUB trees written by `tools.flair_toy`.

- `toy_tree` (session): 12 patches, 2 domain-years (one test-only), 4 ROIs of 3 patches, every
  modality present, T in [4, 9] per sensor. Returns `ToyTree(root, result)`.
- `toy_tree_missing` (session): the same shape with a different seed and half of the patches
  lacking some optional modalities (historical, SPOT, S1-ASC, S1-DESC, S2+mask).
- `make_toy_tree(**cfg)` (function): a factory for tests that need their own tree; keyword
  arguments are `ToyConfig` fields (defaults: the small shape above). Each call gets a fresh
  pytest tmp dir.

Trees live under pytest's tmp dirs; treat the session ones as read-only.
Append new shared fixtures at the end of this file; do not edit existing ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import pytest

from tools.flair_toy import GenerateResult, ToyConfig, generate

SMALL_TREE = dict(patches=12, domains=2, rois_per_domain=2, seed=0, t_s2=(4, 9), t_s1=(4, 9),
                  missing_fraction=0.0, workers=1)
"""The shape of the shared trees: fast to write (~2 s), yet with test/train/valid, several ROIs
with multi-patch grids and variable T."""


class ToyTree(NamedTuple):
    root: Path
    result: GenerateResult


def _build(tmp_path_factory: pytest.TempPathFactory, name: str, **overrides) -> ToyTree:
    cfg = ToyConfig.from_dict({**SMALL_TREE, **overrides})
    root = tmp_path_factory.mktemp(name) / "FLAIR-HUB_TOY"
    return ToyTree(root, generate(root, cfg))


@pytest.fixture(scope="session")
def toy_tree(tmp_path_factory: pytest.TempPathFactory) -> ToyTree:
    return _build(tmp_path_factory, "toy_tree")


@pytest.fixture(scope="session")
def toy_tree_missing(tmp_path_factory: pytest.TempPathFactory) -> ToyTree:
    return _build(tmp_path_factory, "toy_tree_missing", seed=1, missing_fraction=0.5)


@pytest.fixture
def make_toy_tree(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., ToyTree]:
    def factory(**cfg) -> ToyTree:
        return _build(tmp_path_factory, "toy_tree_custom", **cfg)

    return factory


# --- appended by the loader engineer (trainer/data) -----------------------------------------
class ToyShards(NamedTuple):
    out: Path
    tree: ToyTree


@pytest.fixture(scope="session")
def toy_shards(toy_tree: ToyTree, tmp_path_factory: pytest.TempPathFactory) -> ToyShards:
    """`toy_tree` packed with small shards (about two samples each, so splits have odd shard counts)."""
    from packer.pack import pack_dataset

    out = tmp_path_factory.mktemp("toy_shards") / "shards"
    pack_dataset(toy_tree.root, out, shard_size=5_000_000, workers=1, progress=False)
    return ToyShards(out, toy_tree)


@pytest.fixture(scope="module")
def single_torch_thread():
    """Run a module's tiny-tensor tests on one torch thread, then restore the count.

    On 2 shared cores, OpenMP hand-offs cost more than the work on tensors this small (measured
    about 20x slower with the default thread count under load). Use it with
    `pytestmark = pytest.mark.usefixtures("single_torch_thread")`.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- appended with the packer's s3:// output (shared by packer and loader tests) ------------
@pytest.fixture
def s3_server(monkeypatch):
    """A local S3 endpoint (moto) with test credentials; yields its URL (`http://127.0.0.1:PORT`)."""
    import socket

    from moto.server import ThreadedMotoServer

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


# --- appended with shard format 2 (packer/codec.py) -------------------------------------------
def _legacy_encode(arr, filter: str = "shuffle", level: int = 3) -> bytes:
    """A member as format 1 wrote it (packer/codec.py before format 2): `filter="shuffle"` gives,
    for dtypes wider than one byte, FSHUF1 + the .npy header + byte planes, zstd-framed."""
    import io

    import numpy as np
    import zstandard

    from packer.codec import LEGACY_SHUFFLE_MAGIC

    arr = np.ascontiguousarray(arr)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    npy = buf.getvalue()
    if filter == "shuffle" and arr.dtype.itemsize > 1:
        planes = arr.reshape(-1).view(np.uint8).reshape(-1, arr.dtype.itemsize).T
        npy = LEGACY_SHUFFLE_MAGIC + npy[: len(npy) - arr.nbytes] + planes.tobytes()
    return zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=True).compress(npy)


@pytest.fixture(scope="session")
def legacy_encode():
    """`legacy_encode(arr, filter="shuffle"|"none")`: one member in the format-1 encoding."""
    return _legacy_encode


@pytest.fixture(scope="session")
def legacy_shards(toy_tree: ToyTree, tmp_path_factory: pytest.TempPathFactory) -> ToyShards:
    """`toy_tree` packed the way format 1 did by default (`--filter shuffle`): byte-shuffled wider
    dtypes under `.npy.zst`, no per-member checksum columns, a format-1 manifest."""
    import json

    import pyarrow.parquet as pq

    from packer import pack as pack_mod
    from packer import sample as sample_mod
    from packer import schema
    from packer.manifest import file_sha256

    out = tmp_path_factory.mktemp("legacy_shards") / "shards"
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(sample_mod, "encode_array", lambda arr, setting: _legacy_encode(arr))
        mp.setattr(schema, "FORMAT_VERSION", 1)
        pack_mod.pack_dataset(toy_tree.root, out, shard_size=5_000_000, workers=1, progress=False)
    finally:
        mp.undo()
    index = pq.read_table(out / schema.INDEX_FILE)
    index = index.drop_columns([c for c in index.column_names if c.endswith("_xxh3")])
    pq.write_table(index, out / schema.INDEX_FILE, compression="zstd")
    manifest = json.loads((out / schema.MANIFEST_FILE).read_text())
    manifest["codec"] = {"container": "npy", "compression": "zstd", "level": 3, "filter": "shuffle",
                         "member_suffix": ".npy.zst"}
    manifest["index"]["sha256"] = file_sha256(out / schema.INDEX_FILE)
    assert manifest["format_version"] == 1
    (out / schema.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return ToyShards(out, toy_tree)
