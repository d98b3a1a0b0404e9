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

import http.server
import re
import threading
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


# --- moved here from tests/trainer/test_data_remote.py (shared by the loader and API tests) -----
class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `root` read-only under `/plain/` and `/datasets/<owner>/<name>/resolve/<rev>/`,
    with byte ranges, recording Authorization headers and failing the first GET of each path
    with a 503 when `flaky` is set (to exercise the retries)."""

    root: Path
    seen_auth: list
    flaky: bool = False
    failed: set

    def log_message(self, *args):  # keep test output quiet
        pass

    def _file(self) -> Path | None:
        m = re.match(r"^/(?:plain|datasets/[^/]+/[^/]+/resolve/[^/]+)/(.+)$", self.path)
        if not m:
            return None
        f = (self.root / m.group(1)).resolve()
        return f if f.is_file() and self.root in f.parents else None

    def do_HEAD(self):
        self.seen_auth.append(self.headers.get("Authorization"))
        f = self._file()
        if f is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(f.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self):
        self.seen_auth.append(self.headers.get("Authorization"))
        f = self._file()
        if f is None:
            self.send_error(404)
            return
        if self.flaky and self.path not in self.failed:
            self.failed.add(self.path)
            self.send_error(503)
            return
        data = f.read_bytes()
        rng = re.match(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        if rng:
            lo, hi = int(rng.group(1)), min(int(rng.group(2)), len(data) - 1)
            body = data[lo : hi + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {lo}-{hi}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def serve_http():
    """`serve_http(root)` -> (base URL, handler class): `root` over HTTP with ranges (see RangeHandler)."""
    servers = []

    def start(root: Path):
        handler = type("Handler", (RangeHandler,), {"root": Path(root).resolve(), "seen_auth": [], "failed": set()})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", handler

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_server(toy_shards, serve_http):
    """`toy_shards` served over HTTP: (base URL, handler class)."""
    return serve_http(toy_shards.out)


@pytest.fixture
def s3_upload(s3_server):
    """`s3_upload(root, bucket, prefix)`: copy a packed dataset (not its `.pack/` state) to the local S3."""
    import boto3

    def upload(root: Path, bucket: str, prefix: str) -> None:
        s3 = boto3.client("s3", endpoint_url=s3_server)
        s3.create_bucket(Bucket=bucket)
        for f in Path(root).rglob("*"):
            if f.is_file() and ".pack" not in f.parts:
                s3.upload_file(str(f), bucket, f"{prefix}/{f.relative_to(root).as_posix()}")

    return upload
