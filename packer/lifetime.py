"""Pack workers end with the `flair-pack` process that started them, however it ends.

A worker holds ~100 MB and a GDAL environment; if the parent is killed (`kill -9`, the OOM
killer, a scheduler) its workers would otherwise live on under pid 1, with the multiprocessing
resource tracker they keep open, still there after the rerun. So each worker, as it starts:

- on Linux asks the kernel for a parent-death signal (`prctl(PR_SET_PDEATHSIG, SIGKILL)`):
  the worker is killed the moment the process that spawned it dies, even inside a GDAL call;
- elsewhere (or if that call fails) starts a watchdog thread that exits the worker once its
  parent is gone;
- and checks once that the parent is still the one that started it (it may have died before the
  request was made).

The resource tracker then ends by itself: it exits once every process holding its pipe is gone.
SIGTERM and Ctrl-C of the parent are handled there (`packer.command`): the pool is shut down.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
WATCHDOG_PERIOD_S = 1.0


def die_with_parent(parent_pid: int) -> str:
    """Make this (worker) process end when `parent_pid` dies; returns the mechanism used."""
    how = "prctl" if sys.platform.startswith("linux") and _pdeathsig(signal.SIGKILL) else "watchdog"
    if how == "watchdog":
        threading.Thread(target=_watch, args=(parent_pid,), name="flair-pack-parent-watchdog", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the request: nobody will signal us
        os._exit(1)
    return how


def _pdeathsig(sig: int) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCHDOG_PERIOD_S)
    os._exit(1)
