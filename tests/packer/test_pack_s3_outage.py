"""`flair-pack --out s3://` rides out an outage of the endpoint (packer.storage.retry): a real TCP proxy on
127.0.0.1 in front of the moto server goes down for 60 s while the real command uploads shards;
the command waits, retries, finishes with status 0, and the bucket holds exactly the bytes of a
local pack. Slow: the outage is real time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from packer.pack import SLOW_ENV, STATE_DIR, pack_dataset
from packer.storage.retry import min_outage_s

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
OUTAGE_S, RETRIES = 60, 8


def test_s3_output_rides_out_a_60s_outage(toy_tree, s3_proxy, tmp_path):
    import boto3

    moto, proxy = s3_proxy
    client = boto3.client("s3", endpoint_url=moto)  # the test's own view, around the proxy
    client.create_bucket(Bucket="flair")
    assert min_outage_s(RETRIES) > OUTAGE_S

    env = dict(os.environ, FLAIR_S3_ENDPOINT_URL=proxy.url, **{SLOW_ENV: "0.3"})
    cmd = [sys.executable, "-m", "packer.cli", "--src", str(toy_tree.root), "--out", "s3://flair/packed-through-outage",
           "--staging", str(tmp_path / "staging"), "--shard-size", "1", "--workers", "1", "--no-progress",
           "--retries", str(RETRIES)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        records = f"packed-through-outage/{STATE_DIR}/"
        while len(client.list_objects_v2(Bucket="flair", Prefix=records).get("Contents", [])) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the pack made no progress"
            time.sleep(0.1)
        t0 = time.monotonic()
        proxy.outage(OUTAGE_S)  # params + 2 shards are up; 10 shards, index and manifest to go
        out, err = proc.communicate(timeout=OUTAGE_S + 400)
    finally:
        proc.kill()
    took = time.monotonic() - t0
    assert proc.returncode == 0, err[-3000:]
    assert took >= OUTAGE_S and "retrying in" in err and "s3://flair/packed-through-outage/" in err

    local = tmp_path / "local"
    pack_dataset(toy_tree.root, local, shard_size=1, workers=1, progress=False)
    want = {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*") if p.is_file()}
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="flair", Prefix="packed-through-outage/")["Contents"]]
    got = {k[len("packed-through-outage/"):]: client.get_object(Bucket="flair", Key=k)["Body"].read() for k in keys}
    assert got == want  # every shard, the index, the manifest and the resume records, byte for byte
    print(f"flair-pack --out s3:// --retries {RETRIES}: a {OUTAGE_S} s outage ridden out, finished "
          f"{took:.1f} s after it began")
