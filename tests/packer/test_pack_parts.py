"""Scale-out (parts + merge) equals a single run; splits from the official CSVs (`,` and `;`)."""

import pytest

from packer import schema
from packer.cli import main
from packer.shardformat.encoding import decode_array
from packer.errors import PackError
from packer.index import read_index
from packer.inspection import read_sample
from packer.manifest import read_manifest
from packer.merge import merge_parts
from packer.pack import pack_dataset
from packer.verify import verify_dataset

PLACEMENT = {"shard", "sample_index", "offset", "size", "json_offset", "json_size",
             *(f"{m}_{k}" for m in schema.MODALITY_NAMES for k in ("offset", "size"))}


def _content(out):
    """Index rows without their placement in shards, plus the decoded members, by patch id."""
    rows = {}
    for row in read_index(out).to_pylist():
        members = read_sample(out, row)
        arrays = {m: decode_array(members[schema.member_name(row["patch_id"], m)]).tobytes() for m in row["modalities"]}
        rows[row["patch_id"]] = ({k: v for k, v in row.items() if k not in PLACEMENT}, arrays,
                                 members[schema.meta_member_name(row["patch_id"])])
    return rows


def test_parts_then_merge_equal_a_single_run(toy_tree, tmp_path):
    opts = dict(shard_size=3_000_000, workers=1, progress=False)
    pack_dataset(toy_tree.root, tmp_path / "single", **opts)
    sizes = []
    for k in range(3):
        s = pack_dataset(toy_tree.root, tmp_path / f"part-{k}", num_parts=3, part=k, **opts)
        sizes.append(s.patches)
    assert sum(sizes) == 12 and all(n > 0 for n in sizes)
    # Parts given in any order; the merged shards are renumbered part 0 first.
    assert main(["merge", "--out", str(tmp_path / "merged"), *(str(tmp_path / f"part-{k}") for k in (2, 0, 1))]) == 0
    merged = tmp_path / "merged"
    assert _content(merged) == _content(tmp_path / "single")
    assert verify_dataset(merged).ok
    m = read_manifest(merged)
    assert [p["part"] for p in m["parts"]] == [0, 1, 2]
    assert {k: v["samples"] for k, v in m["splits"].items()} == \
        {k: v["samples"] for k, v in read_manifest(tmp_path / "single")["splits"].items()}


def test_merge_refuses_incomplete_or_mixed_parts(toy_tree, tmp_path):
    opts = dict(workers=1, progress=False, modalities=("SPOT_RGBI",))
    pack_dataset(toy_tree.root, tmp_path / "p0", num_parts=2, part=0, **opts)
    with pytest.raises(PackError, match="missing \\[1\\]"):
        merge_parts(tmp_path / "m", [tmp_path / "p0"])
    pack_dataset(toy_tree.root, tmp_path / "p1", num_parts=2, part=1, seed=5, **opts)
    with pytest.raises(PackError, match="other options"):
        merge_parts(tmp_path / "m", [tmp_path / "p0", tmp_path / "p1"])


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_splits_from_official_csvs(toy_tree, tmp_path, delimiter):
    csvs = []
    for split, path in toy_tree.result.csv_files.items():
        text = path.read_text()
        target = tmp_path / path.name
        target.write_text(text.replace(",", delimiter))
        csvs.append(str(target))
    # Leave one patch out of the CSVs: it is not packed, and counted.
    first = tmp_path / toy_tree.result.csv_files["train"].name
    lines = first.read_text().splitlines(keepends=True)
    dropped = lines[1].split(delimiter)[0]
    first.write_text("".join(lines[:1] + lines[2:]))
    summary = pack_dataset(toy_tree.root, tmp_path / "o", splits_csv=csvs, workers=1, progress=False)
    rows = read_index(tmp_path / "o").to_pylist()
    assert {r["patch_id"]: r["split"] for r in rows} == \
        {p: s for p, s in toy_tree.result.splits.items() if p != dropped}
    assert summary.not_in_splits == 0 and len(rows) == 11
    assert read_manifest(tmp_path / "o")["parameters"]["split_source"] == "csv"


def test_split_csv_naming_a_missing_file(toy_tree, tmp_path):
    src = toy_tree.result.csv_files["test"]
    text = src.read_text().replace("_SPOT_RGBI_", "_SPOT_RGBI_X", 1)  # not a patch file name any more
    bad = tmp_path / src.name
    bad.write_text(text)
    with pytest.raises(PackError, match="SPOT_RGBI"):
        pack_dataset(toy_tree.root, tmp_path / "o", splits_csv=[str(bad)], workers=1, progress=False)
    unnamed = tmp_path / "patches.csv"
    unnamed.write_text(src.read_text())
    with pytest.raises(PackError, match="cannot tell the split"):
        pack_dataset(toy_tree.root, tmp_path / "o", splits_csv=[str(unnamed)], workers=1, progress=False)
    summary = pack_dataset(toy_tree.root, tmp_path / "o", splits_csv=[f"valid={unnamed}"], workers=1, progress=False)
    assert set(summary.splits) == {"valid"} and summary.patches == len(src.read_text().splitlines()) - 1
