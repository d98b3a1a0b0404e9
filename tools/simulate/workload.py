"""What one epoch asks of the store and of the loaders, rank by rank: from the index and the plan.

Nothing here is estimated: the selection is `Catalog.select` on the real index, the order is
`epoch_order`, each rank's batches are `cut_steps`, each DataLoader worker's share is
`RankPlan.worker_steps`, and each sample's ranged requests are the reader's own `coalesce` of the
members the config needs (with the reader's gap rule for a local or a remote store). Bytes
decoded per sample come from the schema (bands x T x pixels x dtype) and the index's T columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from packer import schema
from packer.shardformat.columns import dates_column
from packer.shardformat.names import META_SUFFIX
from packer.storage.read import HttpSource, LocalSource
from trainer.data import Catalog, SampleReader, Selection, coalesce_ranges, cut_steps, epoch_order


@dataclass
class Topology:
    nodes: int
    gpus_per_node: int
    workers: int  # DataLoader workers per rank (0: the rank's own process reads)
    threads: int  # decode threads per loader process
    batch_size: int  # per rank

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def producers(self) -> int:
        """Processes per rank that read and decode."""
        return max(1, self.workers)


@dataclass
class Workload:
    """Per selected sample and per rank / node, what an epoch reads."""

    selection: Selection
    needed: tuple[str, ...]
    requests: np.ndarray  # (N,) ranged requests to read a sample
    fetched: np.ndarray  # (N,) bytes those requests return (gaps included when coalesced)
    decoded: np.ndarray  # (N,) bytes of the decoded arrays
    rank_samples: np.ndarray  # (world,) samples per rank and epoch (padding included)
    rank_bytes: np.ndarray  # (world,) bytes fetched per rank and epoch
    rank_requests: np.ndarray  # (world,) ranged requests per rank and epoch
    rank_checks: np.ndarray  # (world,) shard checks (a size request each) by the rank's loader processes
    rank_verify_bytes: np.ndarray  # (world,) whole-shard reads for sha256 checks (`data.verify`)
    batches_per_rank: int
    first_batch_requests: float  # mean requests of a rank's first batch
    first_batch_bytes: float

    @property
    def mean_fetched(self) -> float:
        return float(self.rank_bytes.sum() / max(1, self.rank_samples.sum()))

    @property
    def mean_requests(self) -> float:
        return float((self.rank_requests.sum() + self.rank_checks.sum()) / max(1, self.rank_samples.sum()))

    @property
    def mean_decoded(self) -> float:
        return float(self.decoded.mean())

    def node_bytes(self, topo: Topology) -> np.ndarray:
        per = self.rank_bytes + self.rank_verify_bytes
        return per.reshape(topo.nodes, topo.gpus_per_node).sum(axis=1)


def reader_gap(remote: bool, catalog: Catalog, selection: Selection, needed: tuple[str, ...]) -> int:
    """The gap up to which the loader's reader merges neighbouring members into one request."""
    source = HttpSource("http://simulated.invalid") if remote else LocalSource(".")
    return SampleReader(source, selection, needed).max_gap


def decoded_bytes(catalog: Catalog, selection: Selection, needed: tuple[str, ...]) -> np.ndarray:
    total = np.zeros(len(selection), dtype=np.float64)
    for name in needed:
        mod = schema.modality(name)
        per_band = mod.size_px**2 * mod.np_dtype.itemsize
        if mod.time_series:
            t = catalog.column(dates_column(name)).combine_chunks().to_numpy(zero_copy_only=False)[selection.rows]
            total += per_band * mod.bands_per_date * np.nan_to_num(t.astype(np.float64))
        else:
            total += per_band * mod.bands_per_date
    return total


def build(catalog: Catalog, selection: Selection, needed: tuple[str, ...], topo: Topology, remote: bool,
          seed: int = 0, epoch: int = 0, shuffle: bool = True, shuffle_window: int = 512, uneven: str = "pad",
          verify: bool = False) -> Workload:
    """The epoch `epoch` of `selection` on `topo` (see the module docstring)."""
    gap = reader_gap(remote, catalog, selection, needed)
    names = (META_SUFFIX, *needed)
    offs = np.stack([selection.members[n][0] for n in names], axis=1)
    sizes = np.stack([selection.members[n][1] for n in names], axis=1)
    n = len(selection)
    requests = np.empty(n, dtype=np.int64)
    fetched = np.empty(n, dtype=np.int64)
    # Samples laid out alike are coalesced alike: run the reader's rule once per distinct layout.
    layout = np.concatenate([offs - offs[:, :1], sizes], axis=1)
    uniq, inverse = np.unique(layout, axis=0, return_inverse=True)
    k = len(names)
    for u, row in enumerate(uniq):
        groups = coalesce_ranges(list(zip(row[:k].tolist(), row[k:].tolist())), gap)
        requests[inverse.ravel() == u] = len(groups)
        fetched[inverse.ravel() == u] = sum(length for _, length, _ in groups)
    decoded = decoded_bytes(catalog, selection, needed)
    order = epoch_order(selection.shard, selection.sample_index, seed, epoch, shuffle, shuffle_window)
    world = topo.world
    rank_samples = np.zeros(world)
    rank_bytes = np.zeros(world)
    rank_requests = np.zeros(world)
    rank_checks = np.zeros(world)
    rank_verify = np.zeros(world)
    shard_bytes = np.array([s.bytes for s in selection.shards], dtype=np.float64)
    first_req, first_bytes = [], []
    batches = 0
    for r in range(world):
        plan = cut_steps(order, 0, r, world, topo.batch_size, uneven)
        rows = plan.rows
        batches = plan.n_batches
        rank_samples[r] = rows.size
        rank_bytes[r] = fetched[rows].sum()
        rank_requests[r] = requests[rows].sum()
        for w in range(topo.producers):  # each loader process checks each shard it touches once
            mine = np.unique(selection.shard[rows[w :: topo.producers].ravel()])
            rank_checks[r] += len(mine)
            if verify:
                rank_verify[r] += shard_bytes[mine].sum()
        if batches:
            first_req.append(requests[rows[0]].sum())
            first_bytes.append(fetched[rows[0]].sum())
    return Workload(selection, needed, requests, fetched, decoded, rank_samples, rank_bytes, rank_requests,
                    rank_checks, rank_verify, batches, float(np.mean(first_req or [0])),
                    float(np.mean(first_bytes or [0])))
