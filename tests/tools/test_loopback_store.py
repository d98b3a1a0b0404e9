"""The loopback store: byte ranges like a web host, the loader reads it, the gate holds requests."""

from __future__ import annotations

import threading

import pytest
import requests

from tools import loopback_store
from tools.loopback_store import Link, LoopbackStore
from packer.storage.read import open_source


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.bin").write_bytes(bytes(range(256)) * 1000)
    (tmp_path.parent / "secret.txt").write_text("outside")
    return tmp_path


def test_ranges_sizes_and_paths(folder):
    with LoopbackStore(folder) as store:
        src = open_source(f"{store.url}/sub")
        assert src.size("data.bin") == 256_000
        assert src.read_range("data.bin", 1000, 300) == (bytes(range(256)) * 1000)[1000:1300]
        assert src.read_all("data.bin") == bytes(range(256)) * 1000
        assert requests.get(f"{store.url}/../secret.txt").status_code == 404
        assert requests.get(f"{store.url}/sub/nothing").status_code == 404
        assert requests.get(f"{store.url}/sub/data.bin", headers={"Range": "bytes=999999-"}).status_code == 416
        assert store.requests >= 4 and store.bytes_sent >= 256_300


def test_the_gate_holds_requests_until_opened(folder):
    with LoopbackStore(folder) as store:
        store.gate.clear()
        got = []
        t = threading.Thread(target=lambda: got.append(requests.get(f"{store.url}/sub/data.bin").status_code))
        t.start()
        for _ in range(200):
            if store.held:
                break
            threading.Event().wait(0.05)
        assert store.held == 1 and not got
        store.gate.set()
        t.join(30)
        assert got == [200] and store.held == 0


def test_the_link_shares_its_bandwidth_in_arrival_order(monkeypatch):
    clock = {"now": 100.0}
    slept = []
    monkeypatch.setattr(loopback_store.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(loopback_store.time, "sleep", lambda s: slept.append(s))
    link = Link(bandwidth=1000.0)
    link.send_time(500)  # 0.5 s on an idle link
    link.send_time(1000)  # queued behind the first: done at 1.5 s
    assert slept == pytest.approx([0.5, 1.5])
    clock["now"] = 110.0  # the link went idle again
    link.send_time(100)
    assert slept[-1] == pytest.approx(0.1)
    Link(None).send_time(10**9)  # no cap: no wait
    assert len(slept) == 3
