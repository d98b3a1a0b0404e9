"""Where the shards are read from, as the simulator sees it: latency, bandwidth, request rate.

Presets (override any field on the command line). The figures are typical, not promises; measure
your own store (e.g. with `tools/loopback_store.py`-style probes or the provider's metrics) when
the prediction matters:

| preset | first-byte latency | per connection | per node | whole store | requests/s cap |
|---|---:|---:|---:|---:|---:|
| `local` (NVMe) | 0.1 ms | 2,000 MB/s | 2,000 MB/s | - | - |
| `s3` (same region) | 30 ms | 90 MB/s | 3,000 MB/s (25 Gb/s NIC) | - | 5,500 GET/s per prefix |
| `hub` (huggingface.co) | 100 ms | 50 MB/s | 125 MB/s (1 Gb/s) | - | 16.7 (5,000 per 5 min) |

S3's 5,500 GET/HEAD per second per partitioned prefix is AWS's documented figure; the dataset's
shards share one prefix per split unless the bucket was partitioned. The Hub's resolver requests
are rate-limited per user over 5-minute windows (huggingface.co/docs/hub/rate-limits); 5,000 per
5 minutes is an assumption for a free account: check your tier and pass `--max-rps`. Every ranged
read of `hf://` goes through `/resolve/`, so it counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

MB = 1e6


@dataclass(frozen=True)
class Storage:
    name: str
    latency_s: float  # per request, before the first byte
    per_connection: float | None  # bytes/s one connection can draw (None: no limit of its own)
    per_node: float | None  # bytes/s one node can draw (its NIC, or a local disk)
    store_total: float | None  # bytes/s the store serves to the whole job (None: no shared cap)
    max_rps: float | None  # requests/s the store accepts from the whole job
    remote: bool  # read like a remote store (coalescing across gaps) or like a local file

    def with_overrides(self, **kw) -> "Storage":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    def as_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "local": Storage("local", 0.0001, 2000 * MB, 2000 * MB, None, None, remote=False),
    "s3": Storage("s3", 0.030, 90 * MB, 3000 * MB, None, 5500.0, remote=True),
    "hub": Storage("hub", 0.100, 50 * MB, 125 * MB, None, 5000 / 300, remote=True),
}
