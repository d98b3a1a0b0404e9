"""How every console command ends: `flair-pack`, `flair-train`, `flair-infer`, `flair-zonal`, `flair-toy`.

A user who mistypes a path, fills a disk or points at a server that is down should read one line
that names the file, key or URL and says what is wrong, not a traceback (which reads as a bug in
the tool and hides the one line that matters). So every command runs its body through
`run_command`, which turns the errors that come from the input or the environment into

    <tool>: error: <file, key or URL>: <problem>            exit status 2

(a list of the bad items, where there are several, follows on indented lines), and a stop by the
user into one line with the shell's status for the signal (130 for Ctrl-C, 143 for SIGTERM), so
that scripts and job schedulers still see that the command was stopped rather than failed. A
check that ran and found problems (`flair-pack verify`) prints its report and exits 1. Anything else is a bug and keeps its traceback.

argparse's own usage errors already have this form (`<prog>: error: ...`, status 2).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

EXIT_PROBLEMS_FOUND = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that the same clean-up runs."""


def error_line(tool: str, message: str) -> str:
    """The one line every command prints for an error (several lines of a report are indented)."""
    return f"{tool}: error: {message}"


def report(tool: str, message: str) -> int:
    """Print `message` as `tool`'s error line on stderr; returns the status to exit with (2)."""
    print(error_line(tool, message), file=sys.stderr, flush=True)
    return EXIT_ERROR


def _remote_error_types() -> tuple[type[BaseException], ...]:
    """botocore's and aiohttp's connection/HTTP errors, when those libraries are in use.

    They are not OSErrors; looked up lazily so that commands which never touch S3 need not import them.
    """
    types: list[type[BaseException]] = []
    if "botocore" in sys.modules:
        from botocore.exceptions import BotoCoreError, ClientError

        types += [BotoCoreError, ClientError]
    if "aiohttp" in sys.modules:
        from aiohttp import ClientError as AioClientError

        types.append(AioClientError)
    return tuple(types)


def describe(exc: BaseException) -> str:
    """One line for an error from the input or the environment, naming the file when it is known."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.errno is not None:  # else: a message of our own, naming its URL
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        problem = exc.strerror or os.strerror(exc.errno)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            problem += " (free some space, then rerun the same command: work already done is kept)"
        return f"{where}: {problem}" if where is not None else problem
    return str(exc).strip() or type(exc).__name__  # a list of bad items follows on indented lines


def run_command(tool: str, body: Callable[[], int], *, expected: tuple[type[BaseException], ...] = (),
                interrupted: str = "", stop_on_sigterm: bool = False) -> int:
    """Run a command's `body` and turn how it ends into an exit status (see the module docstring).

    `expected`: the exception types that mean bad input for this command (config, selection,
    checkpoint errors ...), reported as one line like any OSError or remote error.
    `interrupted`: what the user should know after a stop (e.g. that a rerun resumes).
    `stop_on_sigterm`: turn SIGTERM into `Terminated` so that the clean-up of Ctrl-C also runs
    when a scheduler or `kill` stops the command.
    """
    try:
        with _sigterm_raises(stop_on_sigterm):
            return body()
    except Terminated:
        print(f"{tool}: error: terminated (SIGTERM)" + (f"; {interrupted}" if interrupted else ""),
              file=sys.stderr, flush=True)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{tool}: error: interrupted (Ctrl-C)" + (f"; {interrupted}" if interrupted else ""),
              file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except expected + (OSError,) + _remote_error_types() as exc:
        return report(tool, describe(exc))


@contextmanager
def _sigterm_raises(enabled: bool) -> Iterator[None]:
    if not enabled or not _in_main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
