"""`--out` never silently replaces what is there: a non-empty folder that holds no pack needs
`--overwrite`, and a finished dataset made with other options is refused even once `.pack/` (the
resume state, safe to delete) is gone."""

from __future__ import annotations

import shutil

import pytest

from packer import schema
from packer.cli import main
from packer.errors import PackError
from packer.pack import STATE_DIR, pack_dataset

OPTS = dict(shard_size=3_000_000, workers=1, progress=False, modalities=("SPOT_RGBI", "AERIAL_LABEL-COSIA"))
CLI = ["--shard-size", "3MB", "--workers", "1", "--no-progress", "--modalities", "SPOT_RGBI,AERIAL_LABEL-COSIA"]


def test_non_empty_folder_needs_overwrite(toy_tree, tmp_path, capsys, one_error_line):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("months of work")
    assert main(["--src", str(toy_tree.root), "--out", str(out), *CLI]) == 2
    line = one_error_line(capsys.readouterr().err, "flair-pack")
    assert str(out) in line and "chapter1.tex" in line and "--overwrite" in line and "overwrite=" not in line
    assert sorted(p.name for p in out.iterdir()) == ["chapter1.tex"]  # nothing written

    assert main(["--src", str(toy_tree.root), "--out", str(out), "--overwrite", *CLI]) == 0
    assert (out / "chapter1.tex").read_text() == "months of work" and (out / schema.MANIFEST_FILE).is_file()
    # From now on it is a pack: reruns (resume) need no flag.
    assert main(["--src", str(toy_tree.root), "--out", str(out), *CLI]) == 0


def test_finished_dataset_without_pack_state(toy_tree, tmp_path, capsys, one_error_line):
    out = tmp_path / "o"
    pack_dataset(toy_tree.root, out, **OPTS)
    shutil.rmtree(out / STATE_DIR)  # documented as safe to delete once the pack is finished
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    with pytest.raises(PackError, match=r"finished dataset made with other options \(seed: 0 -> 7\)"):
        pack_dataset(toy_tree.root, out, seed=7, **OPTS)
    for flag in ([], ["--overwrite"]):  # --overwrite never replaces a dataset
        assert main(["--src", str(toy_tree.root), "--out", str(out), "--seed", "7", *CLI, *flag]) == 2
        assert "delete it first" in one_error_line(capsys.readouterr().err, "flair-pack")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    # The same options redo the same dataset, byte for byte.
    pack_dataset(toy_tree.root, out, **OPTS)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and STATE_DIR not in p.parts}
    assert after == before


def test_s3_prefix_with_other_objects_needs_overwrite(toy_tree, s3_server, monkeypatch, tmp_path):
    import boto3

    monkeypatch.setenv("FLAIR_S3_ENDPOINT_URL", s3_server)
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="flair")
    client.put_object(Bucket="flair", Key="team/notes.txt", Body=b"keep me")
    with pytest.raises(PackError, match=r"is not empty \(notes.txt\).*--overwrite"):
        pack_dataset(toy_tree.root, "s3://flair/team", staging=tmp_path / "s", **OPTS)
    pack_dataset(toy_tree.root, "s3://flair/team", staging=tmp_path / "s", overwrite=True, **OPTS)
    assert client.get_object(Bucket="flair", Key="team/notes.txt")["Body"].read() == b"keep me"
    pack_dataset(toy_tree.root, "s3://flair/fresh", staging=tmp_path / "s2", **OPTS)  # an empty prefix: no flag
