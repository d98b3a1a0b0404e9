"""S3 outages are ridden out (packer.storage.retry): a real TCP proxy on 127.0.0.1 in front of the moto
server goes down for 20 s, then 60 s, in the middle of an epoch; the loader waits, retries, and
yields exactly the batches of an undisturbed run (no sample lost, none repeated). Bounded: each
test ends within its outage plus the retry schedule; slow because the outages are real time."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from packer.storage.retry import min_outage_s
from tests.loader_configs import NO_PREPROCESSING, loader_config
from trainer.data import StreamingLoader

pytestmark = pytest.mark.slow

def _loader(source: str, **data) -> StreamingLoader:
    # one decode thread: reads happen as batches are drawn
    cfg = loader_config(source, {"SPOT_RGBI": [1, 2, 3, 4], "SENTINEL2_TS": [3, 2, 1]}, seed=3, batch_size=1,
                        pre=NO_PREPROCESSING, decode_threads=1, **data)
    return StreamingLoader.from_config(cfg, "train", rank=0, world_size=1)


def _batches(loader: StreamingLoader, after_first=None) -> list[dict]:
    out = []
    for batch in loader:
        out.append(loader.to_model_inputs(batch))
        if len(out) == 1 and after_first is not None:
            after_first()
    return out


def _upload(endpoint: str, root) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="flair")
    for f in root.rglob("*"):
        if f.is_file() and ".pack" not in f.parts:
            s3.upload_file(str(f), "flair", f"outage-src/{f.relative_to(root).as_posix()}")


@pytest.mark.parametrize("outage_s, retries", [(20, 6), (60, 8)], ids=["20s", "60s"])
def test_loader_rides_out_an_s3_outage(toy_shards, s3_proxy, outage_s, retries, caplog):
    moto, proxy = s3_proxy
    _upload(moto, toy_shards.out)
    assert min_outage_s(retries) > outage_s  # the schedule, not luck, covers the outage
    want = _batches(_loader(str(toy_shards.out)))
    assert len(want) == 5

    loader = _loader("s3://flair/outage-src", s3_endpoint_url=proxy.url, retries=retries)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="flair.retry"):
        got = _batches(loader, after_first=lambda: proxy.outage(outage_s))  # mid-epoch: 4 batches still to read
    took = time.monotonic() - t0

    assert [b["patch_id"] for b in got] == [b["patch_id"] for b in want]
    for g, w in zip(got, want):
        assert all(torch.equal(g[k], w[k]) for k in w if torch.is_tensor(w[k]))
    retried = [r.getMessage() for r in caplog.records if r.name == "flair.retry"]
    assert retried and all("s3://flair/outage-src/" in m for m in retried), retried
    assert took >= outage_s  # the reads really waited the outage out
    print(f"{outage_s} s outage, data.retries {retries}: ridden out in {took:.1f} s, {len(retried)} retries logged")
