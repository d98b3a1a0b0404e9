"""`flair-pack verify` catches damage with a readable report; `inspect` summarises."""

import shutil

import pytest

from packer.cli import main
from packer.index import read_index
from packer.manifest import read_manifest
from packer.pack import pack_dataset


@pytest.fixture(scope="module")
def packed(toy_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "shards"
    pack_dataset(toy_tree.root, out, shard_size=3_000_000, workers=1, progress=False)
    return out


@pytest.fixture
def copy(packed, tmp_path):
    dst = tmp_path / "shards"
    shutil.copytree(packed, dst)
    return dst


def test_clean_dataset_verifies(packed, capsys):
    assert main(["verify", str(packed)]) == 0
    assert "OK" in capsys.readouterr().out


def test_flipped_byte_in_a_member_is_caught(copy, capsys):
    row = read_index(copy).to_pylist()[0]
    shard = copy / row["shard"]
    data = bytearray(shard.read_bytes())
    data[row["AERIAL_RGBI_offset"] + 100] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert row["shard"] in out and "sha256" in out
    assert "does not decode" in out  # the zstd frame checksum / content no longer fits


def test_truncated_shard_is_caught(copy, capsys):
    entry = read_manifest(copy)["shards"][-1]
    shard = copy / entry["path"]
    shard.write_bytes(shard.read_bytes()[: entry["bytes"] // 2])
    assert main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert entry["path"] in out and "truncated" in out


def test_missing_shard_and_missing_manifest(copy, capsys):
    entry = read_manifest(copy)["shards"][0]
    (copy / entry["path"]).unlink()
    assert main(["verify", str(copy)]) == 1
    assert "missing" in capsys.readouterr().out
    (copy / "manifest.json").unlink()
    assert main(["verify", str(copy)]) == 1
    assert "manifest" in capsys.readouterr().out


def test_damaged_index_is_caught(copy, capsys):
    """An index rewritten with one wrong offset (valid Parquet), then one cut short."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = copy / "index.parquet"
    t = pq.read_table(path)
    col = t.schema.get_field_index("SPOT_RGBI_offset")
    offsets = t.column(col).to_pylist()
    pq.write_table(t.set_column(col, "SPOT_RGBI_offset", pa.array([offsets[0] + 512] + offsets[1:], pa.int64())), path)
    assert main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "index.parquet: sha256 differs from the manifest" in out and "index says" in out
    path.write_bytes(path.read_bytes()[:200])
    assert main(["verify", str(copy)]) == 1
    assert "cannot read manifest/index" in capsys.readouterr().out


def test_inspect_dataset_and_sample(packed, capsys):
    assert main(["inspect", str(packed)]) == 0
    out = capsys.readouterr().out
    assert "12 samples" in out and "SENTINEL2_TS" in out
    pid = read_index(packed).column("patch_id")[0].as_py()
    assert main(["inspect", str(packed), pid]) == 0
    out = capsys.readouterr().out
    assert pid in out and "uint16[4, 64, 64]" in out and "dates" in out
    assert main(["inspect", str(packed), "D000-2000_XX-S1-1_1-1"]) == 2
