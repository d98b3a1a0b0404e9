"""Shared fixtures.

Synthetic FLAIR-HUB trees written by `tools.flair_toy`:
- `toy_tree` (session): 12 patches, 2 domain-years (one test-only), 4 ROIs of 3 patches, every
  modality present, T in [4, 9] per sensor. Returns `ToyTree(root, result)`.
- `toy_tree_missing` (session): the same shape with a different seed and half of the patches
  lacking some optional modalities (historical, SPOT, S1-ASC, S1-DESC, S2+mask).
- `make_toy_tree(**cfg)` (function): a factory for tests that need their own tree; keyword
  arguments are `ToyConfig` fields (defaults: the small shape above). Each call gets a fresh
  pytest tmp dir.
- `toy_shards` (session): `toy_tree` packed (`shuffled_shards`: with `--shuffle`); `toy_zips` (session):
  `toy_tree` as the Hub's zips.

Trees live under pytest's tmp dirs; treat the session ones as read-only.

Local servers and failure injection: `s3_server` (moto), `no_s3_server`, `s3_proxy` (an S3 that
goes down on demand), `s3_upload`, `fake_hub` and `http_server` (the Hub's HTTP scheme on
127.0.0.1), `one_error_line` (the CLI error style). `no_network` keeps every test off the network.
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


# --- packed shards, torch threads -----------------------------------------------------------------
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


@pytest.fixture(scope="session")
def shuffled_shards(toy_tree: ToyTree, tmp_path_factory: pytest.TempPathFactory) -> ToyShards:
    """`toy_tree` packed as `toy_shards`, with `--shuffle` (opt-in `.npy.blosc` members, format 3)."""
    from packer.pack import pack_dataset

    out = tmp_path_factory.mktemp("shuffled_shards") / "shards"
    pack_dataset(toy_tree.root, out, shard_size=5_000_000, workers=1, progress=False, shuffle=True)
    return ToyShards(out, toy_tree)


@pytest.fixture
def shards_copy(toy_shards: ToyShards, tmp_path: Path) -> Path:
    """A private copy of `toy_shards`'s output folder, for tests that damage or edit it."""
    import shutil

    dst = tmp_path / "shards"
    shutil.copytree(toy_shards.out, dst)
    return dst


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


# --- S3 (a local moto server) ---------------------------------------------------------------------
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


# --- failure injection: CLI error lines, endpoints that are down (docs/reliability.md) ------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def one_error_line():
    """`check(stderr, tool)`: stderr is exactly one line `<tool>: error: ...` and no traceback; returns it."""
    def check(err: str, tool: str) -> str:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), err
        assert "Traceback" not in err
        return lines[0]

    return check


@pytest.fixture
def no_s3_server(monkeypatch) -> str:
    """An S3 endpoint URL on 127.0.0.1 where nothing listens (a server that is down), with test credentials."""
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    url = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("FLAIR_S3_ENDPOINT_URL", url)
    return url


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 in front of a local server, that can go down and come back on
    the same port: `outage(seconds)` closes the listening socket and every open connection (new
    connections are refused, as by a server that is down), then listens again after `seconds`."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._open: set = set()
        self._listener = None
        self.outages = 0
        self.start()

    def start(self) -> None:
        import socket
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        import socket

        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._open = self._open, set()
        if listener is not None:
            listener.close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def outage(self, seconds: float):
        """Go down now, come back after `seconds`; returns the thread that brings it back."""
        import threading

        self.stop()
        self.outages += 1
        back = threading.Timer(seconds, self.start)
        back.daemon = True
        back.start()
        return back

    def _accept(self, listener) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst) -> None:
        import socket

        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            self._open.discard(src)
        src.close()  # the other direction's pump closes the other socket


@pytest.fixture
def s3_proxy(s3_server):
    """(moto URL, a `TcpProxy` in front of it): point clients at `proxy.url` and cut them off at will."""
    proxy = TcpProxy(int(s3_server.rsplit(":", 1)[1]))
    yield s3_server, proxy
    proxy.stop()


# --- the Hub: its HTTP scheme on 127.0.0.1 and its zip layout -------------------------------------
@pytest.fixture
def fake_hub(monkeypatch):
    """`fake_hub(root, **knobs)`: a started `tools.fake_hub.FakeHub` serving `root` on 127.0.0.1, with
    `$HF_ENDPOINT` pointing at it and no `$HF_TOKEN`; knobs are FakeHub attributes (e.g. `latency_s`,
    `flaky`, `token`). Every server made is stopped at teardown."""
    from tools.fake_hub import FakeHub

    hubs = []
    monkeypatch.delenv("HF_TOKEN", raising=False)

    def start(root, **knobs) -> FakeHub:
        hub = FakeHub(root)
        for k, v in knobs.items():
            if not hasattr(hub, k):
                raise AttributeError(f"FakeHub has no knob {k!r}")
            setattr(hub, k, v)
        hubs.append(hub.start())
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        return hub

    yield start
    for hub in hubs:
        hub.stop()


class ToyZips(NamedTuple):
    root: Path  # holds data/<DOMAIN>-<YEAR>_<MODALITY>.zip and data/GLOBAL_ALL_MTD.zip
    tree: ToyTree  # the tree they were made from (same files, byte for byte)


@pytest.fixture(scope="session")
def toy_zips(toy_tree: ToyTree, tmp_path_factory: pytest.TempPathFactory) -> ToyZips:
    """`toy_tree` in the Hugging Face Hub's zip layout (deflated members, as `flair-toy --zips` writes)."""
    from tools.toy.zips import zip_tree

    root = tmp_path_factory.mktemp("toy_zips") / "FLAIR-HUB"
    zip_tree(toy_tree.root, root)
    return ToyZips(root, toy_tree)


# --- a packed dataset served over HTTP and S3 -----------------------------------------------------
@pytest.fixture
def http_server(toy_shards, fake_hub):
    """`toy_shards` served by the fake Hub (tools/fake_hub.py): (base URL, server with its knobs and log);
    `<base>/plain/...` and the Hub's resolve URLs both serve the pack."""
    hub = fake_hub(toy_shards.out)
    yield hub.url, hub


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


# --- no network -----------------------------------------------------------------------------------
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
# --- format-1 packs (byte-shuffled members, no checksums): still read by the loader -------------
def _legacy_encode(arr, filter: str = "shuffle", level: int = 3) -> bytes:
    """A member as format 1 wrote it (packer/codec.py before format 2): `filter="shuffle"` gives,
    for dtypes wider than one byte, FSHUF1 + the .npy header + byte planes, zstd-framed."""
    import io

    import numpy as np
    import zstandard

    from packer.shardformat.encoding import LEGACY_SHUFFLE_MAGIC

    arr = np.ascontiguousarray(arr)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    npy = buf.getvalue()
    if filter == "shuffle" and arr.dtype.itemsize > 1:
        planes = arr.reshape(-1).view(np.uint8).reshape(-1, arr.dtype.itemsize).T
        npy = LEGACY_SHUFFLE_MAGIC + npy[: len(npy) - arr.nbytes] + planes.tobytes()
    return zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=True).compress(npy)


@pytest.fixture(scope="session")
def legacy_encode():
    """`legacy_encode(arr, filter="shuffle"|"none")`: one member in the format-1 encoding."""
    return _legacy_encode


@pytest.fixture(scope="session")
def legacy_shards(toy_tree: ToyTree, tmp_path_factory: pytest.TempPathFactory) -> ToyShards:
    """`toy_tree` packed the way format 1 did by default (`--filter shuffle`): byte-shuffled wider
    dtypes under `.npy.zst`, no per-member checksum columns, a format-1 manifest."""
    import json

    import pyarrow.parquet as pq

    from packer import pack as pack_mod
    from packer import schema
    from packer.manifest import file_sha256
    from packer.shardformat import names
    from packer.shardformat import writer as sample_mod

    out = tmp_path_factory.mktemp("legacy_shards") / "shards"
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(sample_mod, "encode_array", lambda arr, setting: _legacy_encode(arr))
        mp.setattr(names, "FORMAT_VERSION", 1)
        pack_mod.pack_dataset(toy_tree.root, out, shard_size=5_000_000, workers=1, progress=False)
    finally:
        mp.undo()
    index = pq.read_table(out / schema.INDEX_FILE)
    index = index.drop_columns([c for c in index.column_names if c.endswith("_xxh3")])
    pq.write_table(index, out / schema.INDEX_FILE, compression="zstd")
    manifest = json.loads((out / schema.MANIFEST_FILE).read_text())
    manifest["codec"] = {"container": "npy", "compression": "zstd", "level": 3, "filter": "shuffle",
                         "member_suffix": ".npy.zst"}
    manifest["index"]["sha256"] = file_sha256(out / schema.INDEX_FILE)
    assert manifest["format_version"] == 1
    (out / schema.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return ToyShards(out, toy_tree)
