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


# --- appended with pretrained encoder weights (trainer/model/pretrained.py) -----------------
_LOOPBACK = ("127.0.0.1", "::1", "localhost", "0.0.0.0", "")


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """Tests never reach the network: only loopback connections (moto, local HTTP servers) pass.

    A test that would download (ImageNet weights, a Hub file) fails at once with an OSError
    instead of depending on the machine's connectivity or caches.
    """
    import socket

    real_connect, real_connect_ex, real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def _check(address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and str(host) not in _LOOPBACK and not str(host).startswith("127."):
            raise OSError(f"tests must not use the network (connection to {address} refused by tests/conftest.py)")

    def connect(self, address):
        _check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        _check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        _check((host,))
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
    yield
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = real_connect, real_connect_ex, real_getaddrinfo
