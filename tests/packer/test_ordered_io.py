"""The background I/O of the packer: order kept, errors surfaced, memory bounded, failures leave nothing complete-looking."""

from __future__ import annotations

import threading
import time

import pytest

from packer.ordered_io import OrderedIO
from packer.pack import pack_dataset
from packer.verify import verify_dataset


def test_tasks_run_in_submission_order():
    io, seen = OrderedIO(), []
    for i in range(200):
        io.submit(seen.append, i)
    io.drain()
    io.close()
    assert seen == list(range(200))


def test_an_error_on_the_thread_is_raised_in_the_caller():
    io = OrderedIO()

    def boom():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):  # at a later submit, or at the latest in drain
        io.submit(boom)
        for _ in range(100):
            io.submit(time.sleep, 0.001)
        io.drain()
    io.close()


def test_nothing_runs_after_a_failed_task():
    io, seen = OrderedIO(), []
    gate = threading.Event()
    io.submit(gate.wait)

    def boom():
        raise OSError("disk full")

    io.submit(boom)
    io.submit(seen.append, "after")
    gate.set()
    with pytest.raises(OSError, match="disk full"):  # the first error, not the skipped task's
        io.drain()
    io.close()
    assert seen == []


def test_pending_bytes_are_bounded():
    """A slow disk makes `submit` wait instead of letting queued bytes grow without limit."""
    gate, io = threading.Event(), OrderedIO(max_pending_bytes=100)
    io.submit(gate.wait, nbytes=60)
    io.submit(lambda: None, nbytes=30)  # 90 <= 100: returns at once
    threading.Timer(0.3, gate.set).start()
    t0 = time.monotonic()
    io.submit(lambda: None, nbytes=30)  # 120 > 100: waits for the first task
    assert time.monotonic() - t0 >= 0.2
    io.drain()
    io.close()


def test_cancel_skips_queued_tasks():
    gate, io, seen = threading.Event(), OrderedIO(), []
    io.submit(gate.wait)
    for i in range(5):
        io.submit(seen.append, i)
    threading.Timer(0.2, gate.set).start()
    io.close(cancel=True)
    assert seen == []


def test_failed_write_leaves_only_complete_shards(toy_tree, tmp_path, disk_full_at):
    """A write error (disk full) on the I/O thread stops the run; what remains resumes to a valid dataset."""
    restore = disk_full_at(5)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):
        pack_dataset(toy_tree.root, out, workers=1, shard_size=3_000_000, progress=False)
    assert not (out / "manifest.json").exists() and not (out / "index.parquet").exists()
    assert not list(out.rglob("*.partial"))
    for tar in out.rglob("*.tar"):  # every shard in place has its sidecar: it is complete
        assert (out / ".pack" / f"{tar.stem}.json").is_file()
    restore()
    summary = pack_dataset(toy_tree.root, out, workers=1, shard_size=3_000_000, progress=False)
    assert summary.resumed_shards >= 1
    assert verify_dataset(out).ok
