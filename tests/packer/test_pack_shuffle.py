"""`flair-pack --shuffle` (opt-in, shard format 3): the modalities of wider dtypes as byte-shuffled
Blosc `.npy.blosc` members.

Every member is bit-exact against rasterio's read through each way in (the loader's ranged reads,
`open_dataset`, webdataset with our handler, numcodecs alone); the training stream equals the
default pack's; damage, a mislabelled member and a zstd level for a Blosc modality are errors
that name what is wrong. The Hugging Face builder and the card's snippets: test_dataset_card.py.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import torch

from packer import schema
from packer.shardformat import encoding, names
from packer.shardformat.encoding import SHUFFLE_SETTINGS, MemberError, decode_array, encode_array, wds_decoder
from packer.verify import verify_dataset
from tests.loader_configs import loader_config
from trainer.data import StreamingLoader
from trainer.data.dataset import open_dataset
from trainer.data.reader import SampleError

ALL = schema.MODALITY_NAMES


def reference(shards, patch_id: str, modality: str) -> np.ndarray:
    with rasterio.open(shards.tree.result.path(patch_id, modality)) as f:
        return f.read()


def same_bits(got: np.ndarray, want: np.ndarray) -> bool:
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def tar_members(out) -> list[str]:
    found = []
    for path in sorted(out.glob("*/*.tar")):
        with tarfile.open(path) as tf:
            found += tf.getnames()
    return found


def test_wider_dtypes_are_blosc_members_of_a_format_3_pack(shuffled_shards, toy_shards):
    manifest = json.loads((shuffled_shards.out / schema.MANIFEST_FILE).read_text())
    default = json.loads((toy_shards.out / schema.MANIFEST_FILE).read_text())
    assert manifest["format_version"] == names.SHUFFLE_FORMAT_VERSION == 3 and default["format_version"] == 2
    assert manifest["parameters"]["shuffle"] is True and "shuffle" not in default["parameters"]
    assert manifest["codec"]["member_suffixes"] == {m: ".npy.blosc" if m in SHUFFLE_SETTINGS else ".npy.zst" for m in ALL}
    wider = {m for m in ALL if np.dtype(schema.MODALITIES[m].dtype).itemsize > 1}
    assert set(SHUFFLE_SETTINGS) == wider  # the shuffle is for every wider dtype, and only for those

    members = tar_members(shuffled_shards.out)
    for name in members:
        pid, key = names.split_member_name(name)
        if key != "json":
            mod = names.name_of_key(key)
            assert key.endswith(".npy.blosc" if mod in wider else ".npy.zst"), name
            assert json.loads(_member(shuffled_shards.out, pid, "json"))["format_version"] == 3
    assert {names.name_of_key(n.split(".", 1)[1]) for n in members} == {"json", *ALL}

    # The point of it: float32 elevation is smaller (and the whole pack too).
    dem = [pq.read_table(o / schema.INDEX_FILE, columns=["DEM_ELEV_size"]).column(0).to_numpy().sum()
           for o in (shuffled_shards.out, toy_shards.out)]
    assert dem[0] < 0.95 * dem[1]
    assert sum(s["bytes"] for s in manifest["shards"]) < sum(s["bytes"] for s in default["shards"])


def _member(out, patch_id: str, key: str) -> bytes:
    row = [r for r in pq.read_table(out / schema.INDEX_FILE).to_pylist() if r["patch_id"] == patch_id][0]
    name = "json" if key == "json" else key
    off, size = row[f"{name}_offset"], row[f"{name}_size"]
    with open(out / row["shard"], "rb") as f:
        f.seek(off)
        return f.read(size)


def test_open_dataset_reads_every_member_bit_exact(shuffled_shards):
    ds = open_dataset(shuffled_shards.out)
    assert ds.format_version == 3
    n = 0
    for pid in ds.patch_ids(None):
        sample = ds[pid]  # one ranged read of the sample, every member checked against the index
        for mod, arr in sample["arrays"].items():
            assert same_bits(arr, reference(shuffled_shards, pid, mod)), f"{pid} {mod}"
            n += 1
    assert n == sum(len(m) for m in shuffled_shards.tree.result.modalities.values())
    for s in ds.samples(None, modalities=["DEM_ELEV", "SENTINEL2_TS"]):  # the loader's ranged reader
        for mod, arr in s["arrays"].items():
            assert same_bits(arr, reference(shuffled_shards, s["patch_id"], mod)), f"{s['patch_id']} {mod}"


def test_webdataset_with_the_registered_handler_and_numcodecs_alone(shuffled_shards):
    wds = pytest.importorskip("webdataset")
    import numcodecs.blosc
    import zstandard

    urls = [str(p) for p in sorted(shuffled_shards.out.glob("*/*.tar"))]
    seen = set()
    for sample in wds.WebDataset(urls, shardshuffle=False).decode(wds_decoder):
        pid = sample["__key__"]
        for mod in sample["json"]["modalities"]:
            suffix = ".npy.blosc" if mod in SHUFFLE_SETTINGS else ".npy.zst"
            assert same_bits(sample[schema.wds_member_key(mod, suffix)], reference(shuffled_shards, pid, mod))
            seen.add((pid, mod))
    assert len({m for _, m in seen}) == len(ALL)
    # What a user without flair-stream writes: numcodecs (zarr's codecs) and numpy, nothing unpickled.
    for sample in wds.WebDataset(urls, shardshuffle=False):
        for key, data in sample.items():
            if key.endswith(".npy.blosc"):
                arr = np.load(io.BytesIO(numcodecs.blosc.decompress(data)), allow_pickle=False)
            elif key.endswith(".npy.zst"):
                arr = np.load(io.BytesIO(zstandard.ZstdDecompressor().decompress(data)), allow_pickle=False)
            else:
                continue
            mod = next(m for m in ALL if key == names.wds_member_key(m, names.array_suffix_of_key(key)))
            assert same_bits(arr, reference(shuffled_shards, sample["__key__"], mod))


def batches(out, workers=0, **data):
    channels = {"AERIAL_RGBI": [4, 1, 2], "SPOT_RGBI": [4, 1, 2], "SENTINEL2_TS": range(1, 11),
                "SENTINEL1-ASC_TS": [1, 2], "SENTINEL1-DESC_TS": [1, 2]}
    inputs = ["AERIAL_RGBI", "AERIAL-RLT_PAN", "DEM_ELEV", "SPOT_RGBI", "SENTINEL2_TS", "SENTINEL1-ASC_TS",
              "SENTINEL1-DESC_TS"]
    cfg = loader_config(out, {m: channels.get(m, []) for m in inputs}, seed=4,
                        batch_size=3, labels=("AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS"), norm={"norm_type": "without"},
                        decode_threads=2, **data)
    loader = StreamingLoader.from_config(cfg, "train", rank=0, world_size=1, num_workers=workers, shuffle=True)
    return [(tuple(b["patch_id"]), {k: v.numpy().tobytes() for k, v in b.items() if torch.is_tensor(v)})
            for b in loader]


@pytest.mark.parametrize("workers", [0, 2])
def test_the_training_stream_is_the_default_packs(shuffled_shards, toy_shards, workers):
    assert batches(shuffled_shards.out, workers) == batches(toy_shards.out, workers)


def test_the_decoded_cache_keeps_blosc_members_decoded(shuffled_shards, toy_shards, tmp_path):
    want = batches(toy_shards.out)
    cache = dict(decoded_cache=str(tmp_path / "cache"), decoded_cache_min_free_gb=0)
    assert batches(shuffled_shards.out, **cache) == want  # fills it
    assert batches(shuffled_shards.out, **cache) == want  # reads it


def test_verify_passes_then_finds_a_damaged_blosc_member(shuffled_shards, tmp_path):
    import shutil

    assert verify_dataset(shuffled_shards.out).ok
    out = tmp_path / "shards"
    shutil.copytree(shuffled_shards.out, out)
    row = pq.read_table(out / schema.INDEX_FILE).to_pylist()[0]
    pid = row["patch_id"]
    # A Blosc chunk has no checksum of its own: a flipped byte inside still decompresses, into
    # different values. The index's xxh3_64 is what must catch it, on every way in.
    with open(out / row["shard"], "r+b") as f:
        f.seek(row["DEM_ELEV_offset"] + row["DEM_ELEV_size"] // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x04]))
    member = f"{pid}.DEM_ELEV.npy.blosc"
    report = verify_dataset(out)
    assert not report.ok and any(member in p and "xxh3_64" in p for p in report.problems), report.problems
    ds = open_dataset(out)
    with pytest.raises(SampleError, match=f"{pid}: {member}: xxh3_64"):
        ds[pid]
    with pytest.raises(SampleError, match=f"{pid}: {member}: xxh3_64"):
        next(ds.samples(None, modalities=["DEM_ELEV"], patch_ids=[pid]))


def test_a_member_whose_content_disagrees_with_its_suffix_is_refused():
    arr = (np.arange(2 * 32 * 32, dtype=np.float32) / 7).reshape(2, 32, 32)
    blosc = encode_array(arr, SHUFFLE_SETTINGS["DEM_ELEV"])
    zstd = encode_array(arr, 3)
    assert same_bits(decode_array(blosc, format_version=3, suffix=".npy.blosc"), arr)
    assert same_bits(decode_array(zstd, format_version=3), arr)  # format 3 keeps .npy.zst members as they were
    with pytest.raises(MemberError, match="is not a Blosc chunk"):
        decode_array(zstd, format_version=3, suffix=".npy.blosc")
    with pytest.raises(MemberError, match="not a zstd frame"):
        decode_array(blosc, format_version=3)
    with pytest.raises(MemberError, match="only format 3 packs hold them"):
        decode_array(blosc, format_version=2, suffix=".npy.blosc")
    with pytest.raises(MemberError, match="declares .* compressed bytes but holds"):
        decode_array(blosc[:-5], format_version=3, suffix=".npy.blosc")
    with pytest.raises(ValueError, match="not a Blosc chunk"):
        wds_decoder("dem_elev.npy.blosc", zstd)
    # A Blosc chunk of something that is not a .npy file: refused by the .npy rule, never unpickled.
    import numcodecs.blosc

    pickled = numcodecs.blosc.compress(np.frombuffer(b"\x80\x04K\x01." * 8, np.uint8), b"lz4", 5)
    with pytest.raises(MemberError, match="is not a zstd-compressed .npy array|starts with"):
        decode_array(pickled, format_version=3, suffix=".npy.blosc")


def test_encoding_is_deterministic_and_per_modality():
    arr = np.random.default_rng(0).normal(100, 5, (2, 64, 64)).astype(np.float32)
    assert encode_array(arr, SHUFFLE_SETTINGS["DEM_ELEV"]) == encode_array(arr.copy(), SHUFFLE_SETTINGS["DEM_ELEV"])
    settings = encoding.compression_settings(None, shuffle=True)
    assert {m for m, s in settings.items() if encoding.member_suffix(s) == ".npy.blosc"} == set(SHUFFLE_SETTINGS)
    assert settings["AERIAL_RGBI"] == encoding.DEFAULT_SETTINGS["AERIAL_RGBI"]  # uint8 stays zstd
    summary = encoding.codec_summary(encoding.manifest_codec(None, ALL, shuffle=True))
    assert "byte-shuffled Blosc .npy.blosc for DEM_ELEV" in summary


def test_a_zstd_level_for_a_blosc_modality_is_one_line(toy_tree, tmp_path, one_error_line):
    proc = subprocess.run([sys.executable, "-m", "packer.cli", "pack", "--src", str(toy_tree.root), "--out", str(tmp_path / "out"),
                           "--shuffle", "--level", "DEM_ELEV=9", "--no-progress"], capture_output=True, text=True)
    assert proc.returncode != 0
    line = one_error_line(proc.stderr, "flair-pack")
    assert "--level" in line and "DEM_ELEV" in line and "Blosc" in line
    assert not (tmp_path / "out").exists()


def test_inspect_describes_a_shuffled_sample(shuffled_shards):
    from packer.inspection import describe_sample

    pid = open_dataset(shuffled_shards.out).patch_ids(None)[0]
    text = describe_sample(shuffled_shards.out, pid)
    assert "DEM_ELEV             float32[2, 512, 512]" in text and "SENTINEL2_TS         uint16[" in text


def test_the_same_bytes_with_one_or_two_workers(toy_tree, shuffled_shards, tmp_path):
    """One worker encodes on the main process, where numcodecs uses Blosc's own threads; two
    workers encode in child processes, one thread each: the chunks must not depend on it."""
    import filecmp

    from packer.pack import pack_dataset

    out = tmp_path / "shards"
    pack_dataset(toy_tree.root, out, shard_size=5_000_000, workers=2, progress=False, shuffle=True)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and ".pack" not in p.parts)
    assert files == sorted(p.relative_to(shuffled_shards.out) for p in shuffled_shards.out.rglob("*")
                           if p.is_file() and ".pack" not in p.parts)
    for f in files:
        assert filecmp.cmp(out / f, shuffled_shards.out / f, shallow=False), f
