"""Retries of remote I/O (S3, HTTP, the Hub): one rule for the loader's reads and the packer's uploads.

An object store that stops answering for a minute (a restart, a network blip, throttling under
load) must not end a training run or a pack: the operation waits and tries again, and since
every retried operation is a whole ranged read, listing or upload, what comes back is exactly
what an undisturbed run would have read (no sample lost, none repeated). What can never succeed
(a missing file, a refused credential) fails at once.

Two layers:

- botocore's own retries (`s3_client_config`): standard mode, up to 3 attempts per request
  (botocore's default; `retries` when it is lower, so `retries: 1` means no retry at all), a
  10 s connect timeout. They absorb a single reset connection or `SlowDown` within seconds.
- `with_retries` around each whole operation, `retries` attempts in all, waiting
  min(30 s, 2^k s) x U(0.8, 1.2) after the k-th failure (1, 2, 4, 8, 16, 30, 30 ... s). The jitter
  spreads the retries of many ranks. This is what rides out an outage: with N attempts the waits
  add up to at least 0.8 x sum(min(30, 2^k), k < N-1), so N = 6 rides out 24 s, N = 8 (the default
  of `data.retries` and of `flair-pack --retries`) 72 s, N = 10 two minutes; botocore's retries
  only lengthen that. Each retry is logged as a warning naming the URL, so a long wait never
  looks like a hang.
"""

from __future__ import annotations

import errno
import logging
import random
import sys
import time
from typing import Callable, TypeVar

T = TypeVar("T")

DEFAULT_ATTEMPTS = 8
MAX_DELAY_S = 30.0
BOTOCORE_ATTEMPTS = 3
CONNECT_TIMEOUT_S = 10.0

log = logging.getLogger("flair.retry")

_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_PERMANENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EINVAL, errno.ENAMETOOLONG}
_TRANSIENT_CODES = {
    # throttling
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "ProvisionedThroughputExceededException", "EC2ThrottledException",
    # transient server-side errors
    "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "InternalError",
    "ServiceUnavailable", "500", "502", "503", "504",
}
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


class TransientError(OSError):
    """A failure worth retrying that no library classifies for us (an HTTP 5xx or 429)."""


class RemoteError(OSError):
    """A remote operation failed for good (out of attempts, or not retryable); names the URL."""


def delay_s(failures: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the `failures`-th failure in a row (1-based)."""
    return min(MAX_DELAY_S, 2.0 ** (failures - 1)) * (0.8 + 0.4 * rng())


def min_outage_s(attempts: int) -> float:
    """The longest outage `attempts` attempts are sure to ride out (botocore's retries not counted)."""
    return 0.8 * sum(min(MAX_DELAY_S, 2.0 ** k) for k in range(attempts - 1))


def is_transient(exc: BaseException) -> bool:
    """True for failures that a later attempt may not meet: lost or refused connections, timeouts,
    throttling and 5xx answers, from the standard library, requests, botocore/aiobotocore or aiohttp."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, _PERMANENT_OS_ERRORS) or isinstance(exc, RemoteError):
        return False
    if isinstance(exc, OSError):  # sockets, s3fs's translations (EBUSY = SlowDown, EIO ...), NFS hiccups
        return exc.errno not in _PERMANENT_ERRNOS
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None:
        if isinstance(exc, (botocore.ConnectionError, botocore.HTTPClientError, botocore.IncompleteReadError)):
            return True  # refused, reset, closed, timed out, or cut mid-body
        if isinstance(exc, botocore.ClientError):
            err = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
            status = (exc.response.get("ResponseMetadata", {}) if isinstance(exc.response, dict) else {}).get(
                "HTTPStatusCode")
            return err.get("Code") in _TRANSIENT_CODES or status in _TRANSIENT_STATUS
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None and isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
        return True
    fsspec_exc = sys.modules.get("fsspec.exceptions")
    return fsspec_exc is not None and isinstance(exc, fsspec_exc.FSTimeoutError)


def _remote_error(what: str, problem: str) -> BaseException:
    return RemoteError(f"{what}: {problem}")


def with_retries(fn: Callable[[], T], what: str, attempts: int = DEFAULT_ATTEMPTS,
                 give_up: Callable[[str, str], BaseException] = _remote_error,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """`fn()`, retried on transient failures (see the module docstring); `what` names the URL.

    When the attempts are used up, raises `give_up(what, problem)` (chained to the last error);
    errors that are not transient propagate unchanged.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except BaseException as exc:  # noqa: BLE001 - classified right below, re-raised when not ours
            if not isinstance(exc, Exception) or not is_transient(exc):
                raise
            problem = " ".join(str(exc).split()) or type(exc).__name__
            if attempt == attempts:
                raise give_up(what, f"failed after {attempts} attempt(s): {problem}") from exc
            wait = delay_s(attempt)
            log.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", what, problem, wait, attempt + 1, attempts)
            sleep(wait)
    raise AssertionError("unreachable")


def s3_client_config(attempts: int = DEFAULT_ATTEMPTS) -> dict:
    """s3fs `config_kwargs` for botocore: its standard retry mode and bounded connect time."""
    return {"retries": {"mode": "standard", "total_max_attempts": max(1, min(attempts, BOTOCORE_ATTEMPTS))},
            "connect_timeout": CONNECT_TIMEOUT_S}
