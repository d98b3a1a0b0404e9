"""Run file I/O on one background thread, in submission order, with bounded memory.

The pack's main loop hands each sample's bytes (and each shard's close: fsync, rename, sidecar)
to this thread and goes on encoding: writes and syncs release the GIL, so the disk works while
the CPU encodes. One thread keeps the order (bytes, then close, then the next shard); the bytes
queued but not yet written are capped, so a slow disk slows the pack down instead of filling memory.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

DEFAULT_MAX_PENDING = 64 * 2**20


class OrderedIO:
    def __init__(self, max_pending_bytes: int = DEFAULT_MAX_PENDING):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="flair-pack-io")
        self._pending: deque[tuple[Future, int]] = deque()
        self._bytes = 0
        self._failed: BaseException | None = None  # set on the I/O thread by the first failing task
        self.max_pending_bytes = max_pending_bytes

    def submit(self, fn: Callable[..., object], *args: object, nbytes: int = 0) -> None:
        """Queue `fn(*args)`; raises here the error of any earlier task that failed.

        Once a task fails, the tasks queued after it do not run (a shard must not be completed
        after an earlier one failed to be written).
        """
        self._pending.append((self._pool.submit(self._run, fn, args), nbytes))
        self._bytes += nbytes
        while self._pending and (self._pending[0][0].done() or self._bytes > self.max_pending_bytes):
            self._pop()

    def _run(self, fn: Callable[..., object], args: tuple) -> object:
        if self._failed is not None:
            raise RuntimeError(f"not run: an earlier I/O task failed ({self._failed!r})")
        try:
            return fn(*args)
        except BaseException as exc:
            self._failed = exc
            raise

    def _pop(self) -> None:
        fut, n = self._pending.popleft()
        self._bytes -= n
        fut.result()

    def drain(self) -> None:
        """Wait until every queued task has run; raises the first error."""
        while self._pending:
            self._pop()

    def close(self, cancel: bool = False) -> None:
        """Stop the thread: after the queued tasks, or (`cancel`) after the running one only."""
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        self._pending.clear()
        self._bytes = 0
