"""`--out s3://bucket/prefix`: the same bytes as a local pack, written straight to object storage,
never an incomplete object under a final name, and a resume from the bucket on another machine."""

from __future__ import annotations

import pytest

from packer import schema
from packer.cli import main
from packer.errors import PackError
from packer.pack import STATE_DIR, pack_dataset

OPTS = dict(shard_size=3_000_000, progress=False)


@pytest.fixture
def bucket(s3_server, monkeypatch):
    import boto3

    monkeypatch.setenv("FLAIR_S3_ENDPOINT_URL", s3_server)
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="flair")
    return client


def _objects(client, prefix: str) -> dict[str, bytes]:
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="flair", Prefix=prefix + "/")
            for o in page.get("Contents", [])]
    return {k[len(prefix) + 1:]: client.get_object(Bucket="flair", Key=k)["Body"].read() for k in keys}


def _local_files(out) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def local_pack(toy_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "shards"
    pack_dataset(toy_tree.root, out, workers=1, **OPTS)
    return _local_files(out)


@pytest.mark.parametrize("workers", [1, 2])
def test_s3_pack_is_byte_identical_to_a_local_pack(toy_tree, bucket, local_pack, tmp_path, workers):
    summary = pack_dataset(toy_tree.root, "s3://flair/hub/v1", staging=tmp_path / "staging", workers=workers, **OPTS)
    assert summary.out == "s3://flair/hub/v1" and summary.shards > 3
    assert _objects(bucket, "hub/v1") == local_pack  # shards, index, manifest and resume records alike
    assert not list((tmp_path / "staging").rglob("*.tar*"))  # nothing left in staging


def test_large_shards_go_up_as_multipart_uploads(toy_tree, bucket, tmp_path, monkeypatch):
    """Real shards (256 MB) are uploaded in parts; here 5 MiB parts (the S3 minimum) and ~10 MB shards."""
    from packer.storage.write import S3Store

    monkeypatch.setattr(S3Store, "upload_chunk", 5 * 2**20)
    opts = dict(OPTS, shard_size=30_000_000)
    pack_dataset(toy_tree.root, tmp_path / "local", workers=1, **opts)
    pack_dataset(toy_tree.root, "s3://flair/big", staging=tmp_path / "s", workers=1, **opts)
    assert _objects(bucket, "big") == _local_files(tmp_path / "local")
    etags = {o["Key"]: o["ETag"] for o in bucket.list_objects_v2(Bucket="flair", Prefix="big/")["Contents"]}
    assert any("-" in tag for key, tag in etags.items() if key.endswith(".tar")), "no shard went up in parts"


def test_failed_s3_pack_resumes_on_another_machine(toy_tree, bucket, local_pack, tmp_path, disk_full_at):
    restore = disk_full_at(6)
    with pytest.raises(OSError, match="No space left"):
        pack_dataset(toy_tree.root, "s3://flair/run", staging=tmp_path / "machine-a", workers=1, **OPTS)
    stored = _objects(bucket, "run")
    assert schema.MANIFEST_FILE not in stored and schema.INDEX_FILE not in stored
    shards = [k for k in stored if k.endswith(".tar")]
    assert shards, "some shards were complete before the failure"
    for key in shards:  # every shard object has its completion record
        assert f"{STATE_DIR}/{key.rsplit('/', 1)[1][:-4]}.json" in stored

    restore()
    summary = pack_dataset(toy_tree.root, "s3://flair/run", staging=tmp_path / "machine-b", workers=1, **OPTS)
    assert summary.resumed_shards == len(shards)
    assert _objects(bucket, "run") == local_pack


def test_s3_rerun_with_other_options_is_refused(toy_tree, bucket, tmp_path):
    pack_dataset(toy_tree.root, "s3://flair/x", staging=tmp_path / "s", workers=1, modalities=("SPOT_RGBI",), **OPTS)
    with pytest.raises(PackError, match="other options"):
        pack_dataset(toy_tree.root, "s3://flair/x", staging=tmp_path / "s", workers=1, **OPTS)


def test_bad_output_urls(toy_tree, bucket, tmp_path, capsys):
    with pytest.raises(PackError, match="cannot be listed"):
        pack_dataset(toy_tree.root, "s3://no-such-bucket/x", workers=1, **OPTS)
    with pytest.raises(PackError, match="only local folders and s3:// URLs are supported"):
        pack_dataset(toy_tree.root, "gs://flair/x", workers=1, **OPTS)
    assert main(["--src", str(toy_tree.root), "--out", str(tmp_path / "o"), "--staging", str(tmp_path / "s"),
                 "--no-progress", "--workers", "1"]) == 2
    assert "--staging" in capsys.readouterr().err
    assert main(["merge", "--out", "o", "s3://flair/x"]) == 2
    assert "works on local folders" in capsys.readouterr().err


def test_verify_and_inspect_read_straight_from_s3(toy_tree, bucket, tmp_path, capsys):
    pack_dataset(toy_tree.root, "s3://flair/v", staging=tmp_path / "s", workers=1, **OPTS)
    assert main(["verify", "s3://flair/v"]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["inspect", "s3://flair/v"]) == 0
    assert "12 samples" in capsys.readouterr().out
    pid = sorted(toy_tree.result.patch_ids)[0]
    assert main(["inspect", "s3://flair/v", pid]) == 0
    assert pid in capsys.readouterr().out

    key = next(k for k in _objects(bucket, "v") if k.endswith(".tar"))
    blob = bytearray(bucket.get_object(Bucket="flair", Key=f"v/{key}")["Body"].read())
    blob[3000] ^= 0x01
    bucket.put_object(Bucket="flair", Key=f"v/{key}", Body=bytes(blob))
    assert main(["verify", "s3://flair/v"]) == 1
    out = capsys.readouterr().out
    assert key in out and "sha256" in out
    assert main(["verify", "s3://flair/nothing-here"]) == 1
    assert "no manifest" in capsys.readouterr().out
