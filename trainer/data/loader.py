"""The streaming loader: plan -> read -> decode -> preprocess -> collate, with exact resume.

`ShardStream` is the IterableDataset that runs inside each DataLoader worker (or in the main
process with 0 workers): it plans the epoch from the index (`trainer.data.distribution`), takes
its share of this rank's batches, and builds each batch with a small thread pool (zstd and
numpy release the GIL, so threads decode in parallel without copying samples between processes).

`StreamingLoader` wraps it in a torch DataLoader for one split, counts the batches it hands to
the training loop and exposes `state_dict()` / `load_state_dict()`; `to_model_inputs` finishes
a batch on the device. Typical use::

    loader = StreamingLoader.from_config(cfg, "train", rank=acc.process_index, world_size=acc.num_processes)
    loader.load_state_dict(ckpt["loader"])           # optional: resume mid-epoch
    for batch in loader:                              # one epoch
        inputs = loader.to_model_inputs(batch, device)
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from trainer.data.catalog import Catalog, Selection, class_balanced_weights
from trainer.data.collate import collate
from trainer.data.distribution import RankPlan, cut_steps, epoch_order, steps_in_epoch
from trainer.data.normalize import to_model_inputs
from trainer.data.reader import SampleReader
from trainer.data.sample import SampleSpec, preprocess_sample
from trainer.data.sources import Source, open_source

STATE_VERSION = 1


def _dist_defaults(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Rank and world size from torch.distributed when initialised, else the launcher's env vars."""
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    return rank, world_size


class ShardStream(IterableDataset):
    """One rank's batches of one epoch, from `position` on (see the module docstring)."""

    def __init__(self, reader: SampleReader, spec: SampleSpec, batch_size: int, seed: int, rank: int, world_size: int,
                 shuffle: bool, shuffle_window: int, uneven: str, decode_threads: int,
                 weights: np.ndarray | None = None) -> None:
        super().__init__()
        self.reader, self.spec = reader, spec
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.shuffle, self.shuffle_window, self.uneven = shuffle, shuffle_window, uneven
        self.decode_threads = decode_threads
        self.weights = weights
        self.epoch = 0
        self.position = 0

    @property
    def selection(self) -> Selection:
        return self.reader.selection

    def plan(self) -> RankPlan:
        """This rank's batches from (epoch, position), computed once and handed to the workers.

        `StreamingLoader` plans in the main process before the DataLoader starts its workers, so
        they inherit the plan (a few hundred rows) instead of each re-planning the whole epoch.
        """
        key = (self.epoch, self.position)
        if getattr(self, "_plan_key", None) != key:
            sel = self.selection
            order = epoch_order(sel.shard, sel.sample_index, self.seed, self.epoch, self.shuffle, self.shuffle_window,
                                weights=self.weights)
            self._plan = cut_steps(order, self.position, self.rank, self.world_size, self.batch_size, self.uneven)
            self._plan_key = key
        return self._plan

    def load_one(self, row: int) -> dict[str, Any]:
        """Read, decode and preprocess one selected row (runs in the decode threads)."""
        return preprocess_sample(self.reader.read(int(row)), self.spec, self.seed, self.epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shared = info is not None  # batches leave this process: build them in shared memory
        plan = self.plan()
        steps = list(plan.worker_steps(worker, n_workers))
        if self.decode_threads <= 1:
            for i in steps:
                yield collate([self.load_one(r) for r in plan.rows[i]], self.spec, plan.valid[i], shared)
            return
        with ThreadPoolExecutor(self.decode_threads, thread_name_prefix="flair-decode") as pool:
            # Keep the next batch in flight while the current one is handed over.
            pending: deque = deque()
            todo = iter(steps)
            for _ in range(2):
                i = next(todo, None)
                if i is not None:
                    pending.append((i, [pool.submit(self.load_one, r) for r in plan.rows[i]]))
            while pending:
                i, futures = pending.popleft()
                samples = [f.result() for f in futures]
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append((nxt, [pool.submit(self.load_one, r) for r in plan.rows[nxt]]))
                yield collate(samples, self.spec, plan.valid[i], shared)


class StreamingLoader:
    """Batches of one split for one rank, with `state_dict()` for exact mid-epoch resume."""

    def __init__(self, source: Source, catalog: Catalog, selection: Selection, spec: SampleSpec, *,
                 batch_size: int, seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 num_workers: int = 0, shuffle: bool = True, shuffle_window: int = 512, uneven: str = "pad",
                 decode_threads: int = 4, verify: bool = False, class_balanced_task: str | None = None,
                 pin_memory: bool = False, prefetch_factor: int = 2) -> None:
        rank, world_size = _dist_defaults(rank, world_size)
        self.source, self.catalog, self.selection, self.spec = source, catalog, selection, spec
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.num_workers, self.pin_memory, self.prefetch_factor = num_workers, pin_memory, prefetch_factor
        self.uneven = uneven
        weights = None
        if class_balanced_task is not None:
            if class_balanced_task not in selection.class_counts:
                raise ValueError(f"data.class_balanced: the index has no class counts for {class_balanced_task}")
            weights = class_balanced_weights(selection.class_counts[class_balanced_task])
        reader = SampleReader(source, selection, spec.needed_modalities, verify=verify)
        self.dataset = ShardStream(reader, spec, batch_size, seed, rank, world_size, shuffle, shuffle_window, uneven,
                                   decode_threads, weights)
        self.epoch = 0
        self.position = 0  # global samples (all ranks) consumed in this epoch

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], split: str | None = "train", *, source: str | Source | None = None,
                    rank: int | None = None, world_size: int | None = None, num_workers: int | None = None,
                    batch_size: int | None = None, shuffle: bool | None = None, augment: bool | None = None,
                    pin_memory: bool = False) -> "StreamingLoader":
        """Build from a validated config. `split` is a split name of the index (e.g. train/valid/test),
        or None for every sample whatever its split.

        Training splits shuffle and augment per the config; pass `shuffle=False, augment=False`
        for evaluation (the defaults do so for any split other than `data.train_split`).
        """
        data = cfg["data"]
        url = source if source is not None else data["source"]
        if url is None:
            raise ValueError("data.source: missing (a local directory or an s3://, https://, hf:// URL)")
        src = url if isinstance(url, Source) else open_source(
            url, retries=data["retries"], s3_endpoint_url=data["s3_endpoint_url"], hf_endpoint=data["hf_endpoint"])
        catalog = Catalog(src)
        training = split == data["train_split"]
        spec = SampleSpec.from_config(cfg, augment=augment if augment is not None else (None if training else False))
        sel = data["select"]
        selection = catalog.select(split, spec.needed_modalities, domains=sel.get("domains") or (),
                                   patch_ids=sel.get("patch_ids"), contains_class=sel.get("contains_class"),
                                   min_class_share=sel.get("min_class_share"))
        balanced = cfg["labels"][0] if (data["class_balanced"] and training) else None
        return cls(src, catalog, selection, spec,
                   batch_size=batch_size or cfg["hyperparams"]["batch_size"], seed=cfg["hyperparams"]["seed"],
                   rank=rank, world_size=world_size,
                   num_workers=cfg.get("hardware", {}).get("num_workers", 0) if num_workers is None else num_workers,
                   shuffle=training if shuffle is None else shuffle, shuffle_window=data["shuffle_window"],
                   uneven=data["uneven"], decode_threads=data["decode_threads"], verify=data["verify"],
                   class_balanced_task=balanced, pin_memory=pin_memory)

    # ---------------------------------------------------------------- iteration
    @property
    def samples_per_step(self) -> int:
        return self.world_size * self.batch_size

    def __len__(self) -> int:
        """Batches this rank yields for the rest of the current epoch (the same on every rank)."""
        return steps_in_epoch(len(self.selection), self.position, self.world_size, self.batch_size, self.uneven)

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its beginning (order and augmentation draws depend on it)."""
        self.epoch, self.position = int(epoch), 0

    def _dataloader(self) -> DataLoader:
        self.dataset.epoch, self.dataset.position = self.epoch, self.position
        self.dataset.plan()  # once per rank and epoch, before the workers start (they inherit it)
        kwargs: dict[str, Any] = {}
        if self.num_workers > 0:
            kwargs = {"prefetch_factor": self.prefetch_factor, "persistent_workers": False}
        return DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                          **kwargs)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The rest of the current epoch; afterwards the loader moves on to the next epoch."""
        for batch in self._dataloader():
            self.position += self.samples_per_step
            yield batch
        self.epoch += 1
        self.position = 0

    def to_model_inputs(self, batch: Mapping[str, Any], device: torch.device | str = "cpu", exact: bool = True) -> dict:
        """Finish a batch on `device`: normalised float32 inputs, int64 labels (see trainer.data.normalize)."""
        return to_model_inputs(batch, self.spec, device, exact)

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands: save it with the training checkpoint."""
        return {"version": STATE_VERSION, "epoch": self.epoch, "position": self.position, "seed": self.seed,
                "world_size": self.world_size, "batch_size": self.batch_size, "n_samples": len(self.selection)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a saved position. A different world size continues the same epoch order
        from the same global position (no sample repeated or lost); a different selection or seed
        is refused because positions would then point at other samples."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')} != {STATE_VERSION}")
        if state["n_samples"] != len(self.selection):
            raise ValueError(f"loader state is for {state['n_samples']} samples, this selection has {len(self.selection)}")
        if state["seed"] != self.seed:
            raise ValueError(f"loader state has seed {state['seed']}, the config says {self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
