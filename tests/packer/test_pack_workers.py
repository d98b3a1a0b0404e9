"""Real processes: after `kill -9` or SIGTERM of `flair-pack --workers 2`, no worker and no
multiprocessing resource tracker outlives it (packer.lifetime); SIGTERM ends with one line and
status 143, leaving only complete shards, and the rerun resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from packer.pack import SLOW_ENV, STATE_DIR, pack_dataset

REPO = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 30


def _start(src: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, **{SLOW_ENV: "0.4"})
    cmd = [sys.executable, "-m", "packer.cli", "--src", str(src), "--out", str(out), "--shard-size", "1",
           "--workers", "2", "--no-progress"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _descendants_once_running(proc: subprocess.Popen, out: Path) -> list[psutil.Process]:
    """The pack's children (2 workers + the resource tracker) once it has written 2 shards."""
    deadline = time.monotonic() + 120
    while len(list((out / STATE_DIR).glob("*-*.json"))) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the pack made no progress"
        time.sleep(0.05)
    children = psutil.Process(proc.pid).children(recursive=True)
    commands = [" ".join(c.cmdline()) for c in children]
    assert sum("resource_tracker" in c for c in commands) == 1, commands
    assert sum("spawn_main" in c for c in commands) == 2, commands
    return children


def _all_gone(procs: list[psutil.Process]) -> list[str]:
    """Waits (bounded) for `procs` to end; returns what is still alive."""
    deadline = time.monotonic() + GONE_WITHIN_S
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.fixture
def cleanup():
    """Whatever a failing test leaves alive is killed at the end (by pid, never by name)."""
    procs: list[psutil.Process] = []
    yield procs
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def test_kill_9_of_the_parent_takes_the_workers_and_tracker_along(toy_tree, tmp_path, cleanup):
    out = tmp_path / "out"
    proc = _start(toy_tree.root, out)
    children = _descendants_once_running(proc, out)
    cleanup += children
    os.kill(proc.pid, signal.SIGKILL)  # the parent only, as the OOM killer would
    proc.wait(timeout=30)
    assert _all_gone(children) == []


def test_sigterm_shuts_the_pool_down_with_one_line(toy_tree, tmp_path, cleanup):
    out = tmp_path / "out"
    proc = _start(toy_tree.root, out)
    children = _descendants_once_running(proc, out)
    cleanup += children
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert lines == ["flair-pack: error: terminated (SIGTERM); complete shards are kept: rerun the same command "
                     "to resume"], err
    assert _all_gone(children) == []
    assert not list(out.rglob("*.partial"))
    summary = pack_dataset(toy_tree.root, out, shard_size=1, workers=2, progress=False)
    assert summary.resumed_shards >= 2 and summary.patches == 12
