"""Packing straight from the Hub's zips on local disk: the same bytes as packing the extracted tree,
whatever form the source takes (a folder of zips with or without `data/`, one zip, zips mixed with
extracted folders), and clear errors for bad zips."""

import shutil
import zipfile

import pytest

from packer import schema
from packer.cli import main
from packer.errors import PackError
from packer.manifest import read_manifest
from packer.pack import pack_dataset
from packer.tree import modality_hint, tree_path
from tools.toy.zips import zip_folder

OPTS = dict(shard_size=3_000_000, seed=3, workers=1, progress=False)


@pytest.fixture(scope="module")
def tree_pack(toy_tree, tmp_path_factory):
    """The reference: the extracted tree packed with OPTS."""
    out = tmp_path_factory.mktemp("tree_pack") / "shards"
    pack_dataset(toy_tree.root, out, **OPTS)
    return out


def _copy_zips(toy_zips, dest):
    shutil.copytree(toy_zips.root / "data", dest)
    return dest


def _domains(toy_tree):
    return sorted({pid.split("-")[0] for pid in toy_tree.result.patch_ids})


def test_folder_of_zips_with_and_without_data_level(toy_zips, tree_pack, tmp_path, same_pack):
    with_level = pack_dataset(toy_zips.root, tmp_path / "a", **OPTS)
    src = same_pack(tree_pack, tmp_path / "a")
    assert src == (str(toy_zips.tree.root.resolve()), str(toy_zips.root.resolve()))
    pack_dataset(toy_zips.root / "data", tmp_path / "b", **dict(OPTS, workers=2))
    same_pack(tree_pack, tmp_path / "b")
    # what the index and JSON record: tree paths, and the GeoTIFFs' own sizes (not compressed sizes)
    assert with_level.bytes_in == sum(p.stat().st_size for p in toy_zips.tree.root.glob("*_*/*/*.tif"))
    report = with_level.source
    assert report.zips_read == len(list((toy_zips.root / "data").glob("*.zip"))) and not report.ignored
    assert report.members.requests == 10 * 12  # one read per member: ten modalities, twelve patches
    assert "source: 21 zips" in str(with_level)


@pytest.mark.parametrize("compression", ["store", "deflate"])
def test_single_zip_with_a_top_folder(toy_tree, tree_pack, tmp_path, compression, same_pack):
    """The IGN toy dataset's shape: one zip, every path under `FLAIR-HUB_TOY/`."""
    single = zip_folder(toy_tree.root, tmp_path / "FLAIR-HUB_TOY_DATASET.zip", compression)
    with zipfile.ZipFile(single) as zf:
        assert zf.namelist()[0] == f"{toy_tree.root.name}/"
    pack_dataset(single, tmp_path / "o", **OPTS)
    same_pack(tree_pack, tmp_path / "o")


def test_zips_mixed_with_extracted_folders(toy_zips, tree_pack, tmp_path, same_pack):
    """One domain extracted by hand beside the other domain's zips, GLOBAL_ALL_MTD as a folder."""
    src = tmp_path / "mixed"
    src.mkdir()
    first = _domains(toy_zips.tree)[0]
    for z in (toy_zips.root / "data").glob("*.zip"):
        if not z.name.startswith(first) and z.stem != schema.GLOBAL_MTD_FOLDER:
            shutil.copy(z, src / z.name)
    for folder in toy_zips.tree.root.iterdir():
        if folder.name.startswith(first + "-") or folder.name == schema.GLOBAL_MTD_FOLDER:
            shutil.copytree(folder, src / folder.name)
    summary = pack_dataset(src, tmp_path / "o", **dict(OPTS, workers=2))
    same_pack(tree_pack, tmp_path / "o")
    assert summary.source.zips_read == 10  # the second domain's ten modalities; the first is extracted


def test_subset_of_modalities_opens_only_their_zips(toy_tree, toy_zips, tmp_path, same_pack):
    mods = ("AERIAL_RGBI", "AERIAL_LABEL-COSIA")
    pack_dataset(toy_tree.root, tmp_path / "tree", modalities=mods, **OPTS)
    summary = pack_dataset(toy_zips.root, tmp_path / "zips", modalities=mods, **OPTS)
    same_pack(tmp_path / "tree", tmp_path / "zips")
    assert summary.source.zips_read == 2 * 2 + 1  # two domains x two modalities + GLOBAL_ALL_MTD.zip
    assert summary.source.zips_skipped == 21 - 5


def test_historical_alone_takes_its_year_from_the_metadata(toy_tree, toy_zips, tmp_path, same_pack):
    """Only the 195X zips are read: the patch year comes from GLOBAL_AERIAL-RLT_MTD_DATES.gpkg."""
    mods = ("AERIAL-RLT_PAN",)
    pack_dataset(toy_tree.root, tmp_path / "tree", modalities=mods, **OPTS)
    summary = pack_dataset(toy_zips.root, tmp_path / "zips", modalities=mods, **OPTS)
    same_pack(tmp_path / "tree", tmp_path / "zips")
    assert summary.patches == 12 and summary.source.zips_read == 3


def test_split_csvs_name_files_inside_the_zips(toy_tree, toy_zips, tmp_path, same_pack):
    csvs = [str(p) for p in toy_tree.result.csv_files.values()]
    pack_dataset(toy_tree.root, tmp_path / "tree", splits_csv=csvs, **OPTS)
    pack_dataset(toy_zips.root, tmp_path / "zips", splits_csv=csvs, **OPTS)
    same_pack(tmp_path / "tree", tmp_path / "zips")


def test_parts_are_the_same_patches_whatever_the_source_form(toy_tree, toy_zips, tmp_path, same_pack):
    for k in range(3):
        opts = dict(OPTS, num_parts=3, part=k)
        pack_dataset(toy_tree.root, tmp_path / f"tree-{k}", **opts)
        pack_dataset(toy_zips.root, tmp_path / f"zips-{k}", **opts)
        same_pack(tmp_path / f"tree-{k}", tmp_path / f"zips-{k}")


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------
def test_members_outside_the_grammar_are_ignored_and_listed(toy_zips, tree_pack, tmp_path, same_pack, capsys):
    src = _copy_zips(toy_zips, tmp_path / "data")
    target = sorted(src.glob("*_AERIAL_RGBI.zip"))[0]
    folder = target.stem
    junk = [f"{folder}/README.txt", f"{folder}/ROI/not-a-patch.tif", "../escape.tif",
            f"{folder}/AA-S1-1/{folder}_BB-S1-2_1-1.tif"]  # file name not matching its ROI folder
    with zipfile.ZipFile(target, "a") as zf:
        for name in junk:
            zf.writestr(name, b"junk")
    assert main(["--src", str(src), "--out", str(tmp_path / "o"), "--shard-size", "3MB", "--seed", "3",
                 "--workers", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"ignored {len(junk)} zip members outside the FLAIR-HUB tree grammar" in out
    for name in junk:
        assert f"{target.resolve()}!/{name}" in out
    same_pack(tree_pack, tmp_path / "o")


def test_two_zips_holding_the_same_patch_file(toy_zips, tmp_path, capsys):
    src = _copy_zips(toy_zips, tmp_path / "data")
    original = sorted(src.glob("*_SPOT_RGBI.zip"))[0]
    copy = src / "my-spot-copy.zip"
    shutil.copy(original, copy)
    rc = main(["--src", str(src), "--out", str(tmp_path / "o"), "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("flair-pack: error: ")
    assert str(original.resolve()) in err and str(copy.resolve()) in err and "same patch file" in err
    assert not (tmp_path / "o").exists()


def test_a_zip_and_an_extracted_folder_holding_the_same_file(toy_zips, tmp_path):
    src = _copy_zips(toy_zips, tmp_path / "src")
    zipped = sorted(src.glob("*_DEM_ELEV.zip"))[0]
    shutil.copytree(toy_zips.tree.root / zipped.stem, src / zipped.stem)  # extracted, zip kept
    with pytest.raises(PackError, match="also in") as err:
        pack_dataset(src, tmp_path / "o", **OPTS)
    assert str(src / zipped.stem) in str(err.value) and f"{zipped.resolve()}!/" in str(err.value)


def _cut_zip(path, fraction):
    """Truncate `path` inside the member at `fraction` of its length; returns that member's name."""
    with zipfile.ZipFile(path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
    victim = infos[int(len(infos) * fraction)]
    cut = victim.header_offset + 30 + len(victim.filename) + victim.compress_size // 2
    with open(path, "r+b") as f:
        f.truncate(cut)
    return victim.filename


def test_zip_truncated_mid_member(toy_zips, tmp_path, capsys):
    src = _copy_zips(toy_zips, tmp_path / "data")
    target = sorted(src.glob("*_DEM_ELEV.zip"))[0]
    member = _cut_zip(target, 0.5)
    victim = schema.parse_file_name(member)
    rc = main(["--src", str(src), "--out", str(tmp_path / "fail"), "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and str(target.resolve()) in err and f"inside member {member}" in err and "skip" in err
    assert not (tmp_path / "fail").exists()

    summary = pack_dataset(src, tmp_path / "skip", **dict(OPTS, on_error="skip"))
    pid = str(victim.patch_id())
    skipped = {s["patch_id"]: s for s in read_manifest(tmp_path / "skip")["skipped"]}
    assert list(skipped) == [pid] and skipped[pid]["file"] == f"{target.resolve()}!/{member}"
    assert "truncated" in skipped[pid]["error"]
    assert summary.patches == 11
    assert f"warning: {target.resolve()}: no central directory" in str(summary)


def test_corrupt_member_is_a_problem_of_its_patch(toy_tree, tmp_path):
    single = zip_folder(toy_tree.root, tmp_path / "hub.zip", "store")
    with zipfile.ZipFile(single) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(".tif") and "SPOT_RGBI" in i.filename)
    with open(single, "r+b") as f:
        pos = info.header_offset + 30 + len(info.filename) + info.file_size - 5
        f.seek(pos)
        byte = f.read(1)
        f.seek(pos)
        f.write(bytes([byte[0] ^ 0xFF]))
    pid = str(schema.parse_file_name(info.filename).patch_id())
    with pytest.raises(PackError, match="CRC-32 mismatch") as err:
        pack_dataset(single, tmp_path / "fail", **OPTS)
    assert f"{single.resolve()}!/{info.filename}" in str(err.value) and pid in str(err.value)
    summary = pack_dataset(single, tmp_path / "skip", **dict(OPTS, on_error="skip"))
    assert [s["patch_id"] for s in summary.skipped] == [pid]


# ------------------------------------------------------------------------------------------------
# Name rules
# ------------------------------------------------------------------------------------------------
def test_member_names_and_zip_names():
    assert tree_path("D006-2020_AERIAL_RGBI/FF-S1-14/D006-2020_AERIAL_RGBI_FF-S1-14_5-5.tif") == \
        ("", "D006-2020_AERIAL_RGBI/FF-S1-14/D006-2020_AERIAL_RGBI_FF-S1-14_5-5.tif", "AERIAL_RGBI")
    assert tree_path("TOY/D006-195X_AERIAL-RLT_PAN/FF-S1-14/D006-195X_AERIAL-RLT_PAN_FF-S1-14_5-5.tif")[:2] == \
        ("TOY/", "D006-195X_AERIAL-RLT_PAN/FF-S1-14/D006-195X_AERIAL-RLT_PAN_FF-S1-14_5-5.tif")
    assert tree_path("GLOBAL_ALL_MTD/GLOBAL_ALL_MTD_SPLIT.gpkg") == ("", "GLOBAL_ALL_MTD/GLOBAL_ALL_MTD_SPLIT.gpkg", None)
    for bad in ("../D006-2020_AERIAL_RGBI/FF-S1-14/D006-2020_AERIAL_RGBI_FF-S1-14_5-5.tif",
                "/abs/D006-2020_AERIAL_RGBI/FF-S1-14/D006-2020_AERIAL_RGBI_FF-S1-14_5-5.tif",
                "D006-2020_AERIAL_RGBI/FF-S1-14/D006-2021_AERIAL_RGBI_FF-S1-14_5-5.tif",  # year differs from folder
                "D006-2020_AERIAL_RGBI/D006-2020_AERIAL_RGBI_FF-S1-14_5-5.tif", "notes.txt"):
        assert tree_path(bad) is None, bad
    assert modality_hint("D004-2021_AERIAL_RGBI.zip") == "AERIAL_RGBI"
    assert modality_hint("data/D017-195X_AERIAL-RLT_PAN.zip") == "AERIAL-RLT_PAN"
    assert modality_hint("D004-2021_AERIAL_RGBI_IMS.zip") == "AERIAL_RGBI"
    assert modality_hint("GLOBAL_ALL_MTD.zip") is None and modality_hint("FLAIR-HUB_TOY_DATASET.zip") is None
