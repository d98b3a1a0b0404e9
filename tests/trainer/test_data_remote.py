"""Streaming from remote sources: a local S3 server (moto) and a local HTTP server with Range support
(`tools/fake_hub.py`, shared with the packer's tests) standing in for a web host and for the Hugging
Face Hub (resolve URLs, token, transient errors)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

from trainer.config import validate_config
from trainer.data import StreamingLoader
from packer.storage.read import ShardIntegrityError, hf_base_url, open_source

CFG = {
    "modalities": {
        "inputs": {"SPOT_RGBI": True, "SENTINEL2_TS": True},
        "inputs_channels": {"SPOT_RGBI": [1, 2, 3, 4], "SENTINEL2_TS": [3, 2, 1]},
        "pre_processings": {"filter_sentinel2": True, "temporal_average_sentinel2": "monthly",
                            "temporal_average_sentinel1": False, "calc_elevation": True,
                            "calc_elevation_stack_dsm": True, "use_augmentation": False},
        "normalization": {"norm_type": "custom", "SPOT_RGBI_means": [433.26, 508.75, 467.77, 1137.03],
                          "SPOT_RGBI_stds": [312.76, 284.61, 226.02, 543.11]},
    },
    "models": {"multitemp_model": {"ref_date": "05-15"}},
    "hyperparams": {"batch_size": 2, "seed": 5},
    "labels": ["AERIAL_LABEL-COSIA"],
    "labels_configs": {"AERIAL_LABEL-COSIA": {"value_name": {i: str(i) for i in range(19)}}},
}


def cfg_for(source, **data):
    cfg = copy.deepcopy(CFG)
    cfg["data"] = {"source": source, "retries": 4, **data}
    return validate_config(cfg)


def batches(cfg, **kw):
    ld = StreamingLoader.from_config(cfg, "test", rank=0, world_size=1, shuffle=True, **kw)
    return [ld.to_model_inputs(b) for b in ld]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["patch_id"] == y["patch_id"]
        for k, v in x.items():
            if torch.is_tensor(v):
                assert torch.equal(v, y[k]), k


# --------------------------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------------------------
def test_s3_streaming_equals_local(toy_shards, s3_server, s3_upload):
    s3_upload(toy_shards.out, "flair", "hub/v1")
    local = batches(cfg_for(str(toy_shards.out)))
    remote = batches(cfg_for("s3://flair/hub/v1", s3_endpoint_url=s3_server, verify=True))
    assert_same(local, remote)
    # with worker processes too (each builds its own client)
    assert_same(local, batches(cfg_for("s3://flair/hub/v1", s3_endpoint_url=s3_server), num_workers=2))


def test_s3_corrupted_upload_detected(toy_shards, s3_server, s3_upload, tmp_path):
    import boto3

    s3_upload(toy_shards.out, "flair", "bad")
    shard = sorted((toy_shards.out / "test").glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0x01
    boto3.client("s3", endpoint_url=s3_server).put_object(
        Bucket="flair", Key=f"bad/test/{shard.name}", Body=bytes(data))
    cfg = cfg_for("s3://flair/bad", s3_endpoint_url=s3_server, verify=True)
    with pytest.raises(ShardIntegrityError, match=rf"s3://flair/bad/test/{shard.name}"):
        batches(cfg)


# --------------------------------------------------------------------------------------------
# HTTP and the Hub (the `http_server` fixture is in tests/conftest.py)
# --------------------------------------------------------------------------------------------
def test_http_streaming_equals_local(toy_shards, http_server):
    base, handler = http_server
    handler.flaky = True  # every path fails once: the retries must absorb it
    local = batches(cfg_for(str(toy_shards.out)))
    assert_same(local, batches(cfg_for(f"{base}/plain", verify=True)))
    assert any(r.status == 503 for r in handler.requests), "the flaky server never failed: retries not exercised"


def test_hf_resolve_urls_and_token(toy_shards, http_server, monkeypatch):
    base, handler = http_server
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    local = batches(cfg_for(str(toy_shards.out)))
    remote = batches(cfg_for("hf://datasets/IGNF/flair-shards@v1.0", hf_endpoint=base))
    assert_same(local, remote)
    seen_auth = [r.auth for r in handler.requests]
    assert seen_auth and all(a == "Bearer hf_secret" for a in seen_auth)


def test_hf_url_parsing(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert hf_base_url("hf://datasets/IGNF/FLAIR-HUB/shards") == \
        "https://huggingface.co/datasets/IGNF/FLAIR-HUB/resolve/main/shards"
    assert hf_base_url("hf://datasets/o/n@refs/pr/3/x", "http://mirror:8080/") == \
        "http://mirror:8080/datasets/o/n/resolve/refs%2Fpr%2F3/x"
    with pytest.raises(ValueError, match="hf://datasets"):
        hf_base_url("hf://models/o/n")


def test_missing_remote_file_fails_fast(http_server):
    base, _ = http_server
    src = open_source(f"{base}/plain", retries=3)
    with pytest.raises(FileNotFoundError, match="404"):
        src.size("nope.tar")
    with pytest.raises(ValueError, match="unsupported scheme"):
        open_source("ftp://host/x")
    assert os.path.isdir(open_source(str(Path(__file__).parent)).base)
