"""A really killed run (SIGKILL, and Ctrl-C) resumes on rerun and ends identical to an uninterrupted one."""

import filecmp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from packer.pack import SLOW_ENV, STATE_DIR, pack_dataset

REPO = Path(__file__).resolve().parents[2]


def _start(src: Path, out: Path, workers: int = 1) -> subprocess.Popen:
    env = dict(os.environ, **{SLOW_ENV: "0.4"})
    cmd = [sys.executable, "-m", "packer.cli", "--src", str(src), "--out", str(out), "--shard-size", "1",
           "--workers", str(workers), "--no-progress"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _wait_for_shards(proc: subprocess.Popen, out: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(list((out / STATE_DIR).glob("*-*.json"))) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "packer made no progress"
        time.sleep(0.05)


def _same_output(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and STATE_DIR not in p.parts)
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and STATE_DIR not in p.parts)
    for f in files:
        assert filecmp.cmp(a / f, b / f, shallow=False), f


@pytest.fixture(scope="module")
def reference(toy_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "shards"
    summary = pack_dataset(toy_tree.root, out, shard_size=1, workers=1, progress=False)
    assert summary.shards == 12  # one sample per shard: many resume points
    return out


@pytest.mark.parametrize("workers", [1, 2], ids=["1worker", "2workers"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_run_resumes_to_identical_output(toy_tree, reference, tmp_path, sig, workers):
    out = tmp_path / "shards"
    proc = _start(toy_tree.root, out, workers)
    _wait_for_shards(proc, out, 3)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert not (out / "manifest.json").exists() and not (out / "index.parquet").exists()
    done = len(list((out / STATE_DIR).glob("*-*.json")))
    assert 3 <= done < 12

    summary = pack_dataset(toy_tree.root, out, shard_size=1, workers=2, progress=False)
    assert summary.resumed_shards >= 3 and summary.patches == 12
    assert not list(out.rglob("*.partial"))
    _same_output(reference, out)


def test_rerun_with_other_options_is_refused(toy_tree, tmp_path):
    from packer.errors import PackError

    pack_dataset(toy_tree.root, tmp_path / "o", shard_size=1, workers=1, progress=False,
                 modalities=("AERIAL_RGBI",))
    with pytest.raises(PackError, match="shard_size"):
        pack_dataset(toy_tree.root, tmp_path / "o", shard_size=2, workers=1, progress=False,
                     modalities=("AERIAL_RGBI",))
