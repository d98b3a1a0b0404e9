"""The S3 rules the loader's reads and the packer's writes share: endpoint, client, URL parts.

Endpoint and credentials come from the environment for both: `$FLAIR_S3_ENDPOINT_URL` or
`$AWS_ENDPOINT_URL` for a non-AWS endpoint (MinIO, Ceph, a local moto server), the usual `AWS_*`
variables for credentials (s3fs/botocore read them). Every client gets botocore's retry settings
from `packer.storage.retry`, so an outage is ridden out the same way by a training run and a pack.
"""

from __future__ import annotations

import os

from packer.storage import retry

SCHEME = "s3://"


def s3_endpoint(explicit: str | None = None) -> str | None:
    """`explicit`, else `$FLAIR_S3_ENDPOINT_URL`, else `$AWS_ENDPOINT_URL`, else None (AWS itself)."""
    return explicit or os.environ.get("FLAIR_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")


def s3_filesystem(endpoint_url: str | None = None, attempts: int = retry.DEFAULT_ATTEMPTS):
    """A fresh s3fs client for `s3_endpoint(endpoint_url)`, with botocore's retries set by `retry`.

    Fresh (no instance cache): botocore sessions are not fork-safe, so each process builds its own.
    """
    import s3fs

    endpoint = s3_endpoint(endpoint_url)
    kwargs = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
    return s3fs.S3FileSystem(skip_instance_cache=True, config_kwargs=retry.s3_client_config(attempts), **kwargs)


def s3_path(url: str) -> str:
    """`s3://bucket/key` -> `bucket/key`, the path s3fs takes."""
    return url[len(SCHEME):]


def s3_bucket(url: str) -> str:
    """The bucket of an `s3://` URL ("" when it has none)."""
    return s3_path(url).split("/", 1)[0]


def no_bucket(url: str) -> str:
    """The one-line problem of an `s3://` URL without a bucket (callers raise their own error type)."""
    return f"{url}: no bucket name (expected s3://bucket/prefix)"
