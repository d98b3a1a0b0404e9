"""The streaming loader: plan -> read -> decode -> preprocess -> collate -> hand-over, with exact resume.

`ShardStream` is the IterableDataset that runs inside each DataLoader worker (or in the main
process with 0 workers): it plans the epoch from the index (`trainer.data.distribution`), takes
its share of this rank's batches, and builds each batch with a small thread pool (zstd and
numpy release the GIL): each thread reads, checks, decodes (into its own reused arena) and
preprocesses one sample and writes it straight into its row of the batch buffer, a slot of the
shared-memory ring (`trainer.data.handover`). Only a small description of the batch crosses to
the training process, which views the slot as tensors.

`StreamingLoader` wraps it in a torch DataLoader for one split, counts the batches it hands to
the training loop and exposes `state_dict()` / `load_state_dict()`; `to_model_inputs` finishes
a batch on the device. Typical use::

    loader = StreamingLoader.from_config(cfg, "train", rank=acc.process_index, world_size=acc.num_processes)
    loader.load_state_dict(ckpt["loader"])           # optional: resume mid-epoch
    for batch in loader:                              # one epoch
        inputs = loader.to_model_inputs(batch, device)

A batch's tensors view reused memory: they stay valid as long as they are referenced (the slot
is recycled only after the last reference is gone), so keeping batches is safe, if costly.

Data errors (`data.on_error`): a sample whose member is damaged, does not decode, does not fit
the schema or cannot be preprocessed raises `SampleError` (one line: shard URL, patch id,
member) in the training process (`fail`), or is left out (`skip`): its row is filled with
another sample of the batch flagged `valid=False`, like the padding that equalises ranks, so
every rank still yields the same number of batches; it is logged and listed in `skipped`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from packer.shardformat.encoding import Arena
from packer.shardformat.names import META_SUFFIX
from trainer.data.catalog import Catalog, Selection, class_balanced_weights
from trainer.data.decoded_cache import DecodedCache
from trainer.data.collate import BatchBuilder, BatchLayout, BatchLayoutError, batch_from_buffer, batch_keys
from trainer.data.distribution import RankPlan, cut_steps, epoch_order, steps_in_epoch
from trainer.data.handover import BatchRing, Handed, Lease
from trainer.data.loader_options import LoaderOptions
from trainer.data.shared_plan import SharedPlan
from trainer.data.normalize import OutputPool, to_model_inputs
from trainer.data.reader import SampleError, SampleReader
from trainer.data.sample import SampleSpec, preprocess_sample
from packer.storage.read import ShardIntegrityError, Source, SourceError, open_source

STATE_VERSION = 1
TRANSPORTED = (ShardIntegrityError, SourceError, FileNotFoundError)
"""Data errors raised in a worker and re-raised as they are in the training process (one clear
line, instead of the DataLoader's re-wrapped traceback)."""
FILLER_TRIES = 64
log = logging.getLogger(__name__)
_local = threading.local()


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


def _arena() -> Arena:
    """This thread's decompression arena (reused from sample to sample)."""
    arena = getattr(_local, "arena", None)
    if arena is None:
        arena = _local.arena = Arena()
    return arena


def _identity(item: Any) -> Any:
    """DataLoader collate_fn: items are finished batches (no conversion, no per-array tensors)."""
    return item


class Batch(dict):
    """A batch dict; `lease` is the training process's hold on the ring slot its tensors view."""

    lease: Lease | None = None


class ShardStream(IterableDataset):
    """One rank's batches of one epoch, from `position` on (see the module docstring)."""

    def __init__(self, reader: SampleReader, spec: SampleSpec, options: LoaderOptions, rank: int, world_size: int,
                 weights: np.ndarray | None = None) -> None:
        super().__init__()
        self.reader, self.spec, self.options = reader, spec, options
        self.batch_size, self.seed, self.rank, self.world_size = options.batch_size, options.seed, rank, world_size
        self.shuffle, self.shuffle_window, self.uneven = options.shuffle, options.shuffle_window, options.uneven
        self.decode_threads = options.decode_threads
        self.weights = weights
        self.on_error = options.on_error
        self.transform = options.transform  # raw sample -> batch sample; None: the reference's preprocessing
        self.epoch = 0
        self.position = 0
        # With workers: the epoch plan in shared memory, published by the training process each
        # epoch (persistent workers' own copies of this object keep the epoch they started in).
        self.shared_plan: SharedPlan | None = None
        self.layout: BatchLayout | None = None  # set by the loader before workers start (or on first use)
        self.ring: BatchRing | None = None

    def publish_plan(self) -> None:
        """Training process: plan (epoch, position) once and share it with the workers."""
        plan = self.plan()
        if self.shared_plan is None:
            full = steps_in_epoch(len(self.selection), 0, self.world_size, self.batch_size, self.uneven)
            self.shared_plan = SharedPlan(full, self.batch_size)
        self.shared_plan.publish(self.epoch, self.position, plan)

    @property
    def selection(self) -> Selection:
        return self.reader.selection

    @property
    def depth(self) -> int:
        """Batches decoding at once: enough samples in flight to keep every decode thread busy
        while a batch is handed over (two per thread), and at least the next batch."""
        if self.decode_threads <= 1:
            return 1
        return max(2, -(-2 * self.decode_threads // self.batch_size))

    def plan(self) -> RankPlan:
        """This rank's batches from (epoch, position), computed once per epoch in the training process.

        With workers, `StreamingLoader` publishes it (`publish_plan`) before each epoch and the
        workers read it from shared memory instead of each re-planning the whole epoch.
        """
        key = (self.epoch, self.position)
        if getattr(self, "_plan_key", None) != key:
            sel = self.selection
            order = epoch_order(sel.shard, sel.sample_index, self.seed, self.epoch, self.shuffle, self.shuffle_window,
                                weights=self.weights)
            self._plan = cut_steps(order, self.position, self.rank, self.world_size, self.batch_size, self.uneven)
            self._plan_key = key
        return self._plan

    # ---------------------------------------------------------------- one sample
    def load_one(self, row: int, arena: Arena | None = None) -> dict[str, Any]:
        """Read, check, decode and preprocess one selected row (runs in the decode threads).

        Raises SampleError (one line naming shard, patch and member) for any problem of the data.
        """
        row = int(row)
        raw = self.reader.read(row, arena)
        try:
            if self.transform is not None:
                return self.transform(raw)
            return preprocess_sample(raw, self.spec, self.seed, self.epoch)
        except ValueError as exc:
            raise SampleError(self.reader.shard_url(row), self.selection.patch_ids[row],
                              self.reader.member_name(row, META_SUFFIX), f"preprocessing failed: {exc}") from None

    def _fill(self, builder: BatchBuilder, i: int, row: int) -> SampleError | None:
        """Put row `row`'s sample into batch row `i`; a data problem is returned, not raised."""
        arena = _arena()
        arena.reset()
        try:
            sample = self.load_one(row, arena)
            builder.put(i, sample)
        except SampleError as exc:
            return exc
        except BatchLayoutError as exc:
            return SampleError(self.reader.shard_url(int(row)), self.selection.patch_ids[int(row)],
                               self.reader.member_name(int(row), META_SUFFIX), str(exc))
        return None

    def probe_layout(self) -> BatchLayout:
        """The batch layout, from the first selected sample that loads (others are left to on_error)."""
        last: SampleError | None = None
        for row in range(min(len(self.selection), FILLER_TRIES)):
            try:
                return BatchLayout.from_sample(self.load_one(row), self.spec, self.batch_size)
            except SampleError as exc:
                if self.on_error == "fail":
                    raise
                last = exc
        raise SampleError(last.url, last.patch_id, last.member, f"{last.problem} (and no other sample of the "
                          f"first {FILLER_TRIES} loads)") if last else ValueError("empty selection")

    # ---------------------------------------------------------------- one batch
    def _private_buffer(self, nbytes: int, in_worker: bool) -> tuple[np.ndarray, Any]:
        """(uint8 array, object to hand over) for a batch that gets no ring slot."""
        if in_worker:  # shared memory from the start: the DataLoader then sends only its handle
            t = torch.empty(nbytes, dtype=torch.uint8).share_memory_()
            return t.numpy(), t
        arr = np.empty(nbytes, dtype=np.uint8)
        return arr, arr

    def _start(self, plan: RankPlan, step: int, group: int, in_worker: bool,
               pool: ThreadPoolExecutor | None) -> tuple[BatchBuilder, int | None, Any, list[tuple[int, Future | Any]]]:
        layout = self.layout
        slot = self.ring.acquire(group) if self.ring is not None else None
        if slot is not None:
            buffer, handle = self.ring.slot(slot), None
        else:
            buffer, handle = self._private_buffer(layout.fixed_bytes, in_worker)
        rows = plan.rows[step]
        builder = BatchBuilder(layout, buffer, [], plan.valid[step].copy())
        if pool is None:
            jobs = [(i, self._fill(builder, i, r)) for i, r in enumerate(rows)]
        else:
            jobs = [(i, pool.submit(self._fill, builder, i, r)) for i, r in enumerate(rows)]
        return builder, slot, handle, jobs

    def _finish(self, plan: RankPlan, started: tuple, in_worker: bool) -> Handed:
        builder, slot, handle, jobs = started
        failed = {i: (job.result() if isinstance(job, Future) else job) for i, job in jobs}
        failed = {i: e for i, e in failed.items() if e is not None}
        skipped: list[str] = []
        if failed:
            if self.on_error == "fail":
                if slot is not None:
                    self.ring.give_back(slot)
                return Handed(error=failed[min(failed)])
            good = [i for i in range(self.layout.batch_size) if i not in failed]
            if not good:
                good = [self._filler(plan, builder, min(failed))]
            for i, exc in sorted(failed.items()):
                skipped.append(str(exc))
                builder.valid[i] = False
                if i != good[0]:
                    builder.copy_row(good[0], i)
        need = self.layout.nbytes(builder.t_max())
        new_buffer = None
        if need > len(builder.buffer):  # long series: this batch gets a bigger, private buffer
            new_buffer, new_handle = self._private_buffer(need, in_worker)
            if slot is not None:
                parts = builder.finish(new_buffer)
                self.ring.give_back(slot)
                return Handed(parts=parts, buffer=new_handle, skipped=skipped)
            handle = new_handle
        parts = builder.finish(new_buffer)
        return Handed(parts=parts, slot=slot, buffer=handle, skipped=skipped)

    def _filler(self, plan: RankPlan, builder: BatchBuilder, i: int) -> int:
        """Fill row `i` with the first sample of this rank's epoch that loads (all of a batch failed)."""
        for row in plan.rows.reshape(-1)[:FILLER_TRIES]:
            if self._fill(builder, i, int(row)) is None:
                return i
        raise SampleError(self.reader.shard_url(int(plan.rows.reshape(-1)[0])), "(several)", "(several)",
                          f"none of the first {FILLER_TRIES} samples of the epoch loads; stopping")

    def __iter__(self) -> Iterator[Handed]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        in_worker = info is not None
        if in_worker and self.shared_plan is not None:  # the training process planned this epoch
            self.epoch, self.position = self.shared_plan.where()
            plan = self.shared_plan.read()
        else:
            plan = self.plan()
        if self.layout is None:
            self.layout = self.probe_layout()
        steps = iter(plan.worker_steps(worker, n_workers))
        pool = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="flair-decode") \
            if self.decode_threads > 1 else None
        try:
            # Keep the next batches decoding while the current one is handed over.
            pending: deque = deque()
            for step in steps:
                pending.append(self._start(plan, step, worker, in_worker, pool))
                if len(pending) >= self.depth:
                    yield self._finish_or_error(plan, pending.popleft(), in_worker)
            while pending:
                yield self._finish_or_error(plan, pending.popleft(), in_worker)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _finish_or_error(self, plan: RankPlan, started: tuple, in_worker: bool) -> Handed:
        try:
            return self._finish(plan, started, in_worker)
        except TRANSPORTED as exc:
            if not in_worker:
                raise
            return Handed(error=exc)


class StreamingLoader:
    """Batches of one split for one rank, with `state_dict()` for exact mid-epoch resume."""

    def __init__(self, source: Source, catalog: Catalog, selection: Selection, spec: SampleSpec,
                 options: LoaderOptions | None = None, *, rank: int | None = None, world_size: int | None = None,
                 **changes: Any) -> None:
        """`options` says how to read (`LoaderOptions`); keyword `changes` override some of its
        settings (`StreamingLoader(..., batch_size=8, num_workers=2)`)."""
        options = (options or LoaderOptions()).with_(**changes)
        rank, world_size = _dist_defaults(rank, world_size)
        self.source, self.catalog, self.selection, self.spec = source, catalog, selection, spec
        self.options = options
        self.batch_size, self.seed, self.rank, self.world_size = options.batch_size, options.seed, rank, world_size
        self.num_workers, self.pin_memory, self.prefetch_factor = (options.num_workers, options.pin_memory,
                                                                   options.prefetch_factor)
        self.uneven = options.uneven
        self.use_ring = options.ring
        self.multiprocessing_context = options.multiprocessing_context
        weights = None
        task = options.class_balanced_task
        if task is not None:
            if task not in selection.class_counts:
                raise ValueError(f"data.class_balanced: the index has no class counts for {task}")
            weights = class_balanced_weights(selection.class_counts[task])
        cache = DecodedCache(options.decoded_cache, int(options.decoded_cache_min_free_gb * 1e9)) \
            if options.decoded_cache else None
        reader = SampleReader(source, selection, spec.needed_modalities, verify=options.verify,
                              check_members=options.check_members, cache=cache)
        self.dataset = ShardStream(reader, spec, options, rank, world_size, weights)
        self.epoch = 0
        self.position = 0  # global samples (all ranks) consumed in this epoch
        self.skipped: list[str] = []  # samples left out so far (data.on_error: skip), one line each
        self._ring: BatchRing | None = None
        self._loader: DataLoader | None = None  # kept across epochs while its workers persist
        self._active: Any = None
        self._outputs = OutputPool()  # CPU model inputs, reused across steps (trainer.data.normalize)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], split: str | None = "train", *, source: str | Source | None = None,
                    rank: int | None = None, world_size: int | None = None, num_workers: int | None = None,
                    batch_size: int | None = None, shuffle: bool | None = None, augment: bool | None = None,
                    pin_memory: bool = False, **options: Any) -> "StreamingLoader":
        """Build from a validated config. `split` is a split name of the index (e.g. train/valid/test),
        or None for every sample whatever its split. `options` override any other `LoaderOptions`
        setting (`prefetch_factor`, `multiprocessing_context`, `check_members`, `ring`, `transform`...).

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
        given = {"num_workers": num_workers, "batch_size": batch_size, "shuffle": shuffle}
        changes = {k: v for k, v in given.items() if v is not None}
        opts = LoaderOptions.from_config(cfg, training, pin_memory=pin_memory, **changes, **options)
        return cls(src, catalog, selection, spec, opts, rank=rank, world_size=world_size)

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

    def _start_method(self) -> str:
        # The first method listed is the platform's default (without fixing it as get_start_method would).
        return self.multiprocessing_context or multiprocessing.get_start_method(allow_none=True) \
            or multiprocessing.get_all_start_methods()[0]

    def _prepare_ring(self) -> None:
        """Learn the batch layout and size the slots (once); free slots no batch holds any more."""
        ds = self.dataset
        if ds.layout is None:
            ds.layout = ds.probe_layout()
        if not self.use_ring:
            return
        if self._ring is None:
            t_max = dict(self.selection.max_dates)
            probe_t = {k: 24 for k, _, _ in ds.layout.series}  # temporal averaging: up to 24 periods
            bound = {k: max(t_max.get(k, 0), probe_t[k]) for k in probe_t}
            # Per worker: the batches decoding, the DataLoader's prefetch, and two the loop holds.
            per_group = ds.depth + 2 + (self.prefetch_factor if self.num_workers > 0 else 0)
            ring = BatchRing(max(1, self.num_workers), per_group, ds.layout.nbytes(bound))
            if self.num_workers > 0 and not ring.shareable(self._start_method()):
                ring.close()
                self.use_ring = False
                return
            if self.pin_memory:
                ring.pin()
            self._ring = ring
        self._ring.reclaim()
        ds.ring = self._ring

    def _dataloader(self) -> DataLoader:
        """This epoch's DataLoader: the one of the last epoch while its workers persist, else a new one."""
        ds = self.dataset
        ds.epoch, ds.position = self.epoch, self.position
        if self.num_workers > 0:
            ds.publish_plan()  # once per rank and epoch, here; workers read it from shared memory
        self._prepare_ring()
        if self._loader is not None:
            return self._loader
        kwargs: dict[str, Any] = {}
        persistent = self.num_workers > 0 and self.options.persistent_workers
        if self.num_workers > 0:
            kwargs = {"prefetch_factor": self.prefetch_factor, "persistent_workers": persistent,
                      "multiprocessing_context": self.multiprocessing_context}
        loader = DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers, collate_fn=_identity, **kwargs)
        if persistent:
            self._loader = loader
        return loader

    def _receive(self, item: Handed) -> Batch:
        """A worker's description -> the batch dict, viewing the ring slot (or the private buffer)."""
        if item.error is not None:
            raise item.error
        for line in item.skipped:
            log.warning("data.on_error=skip: left out %s", line)
        self.skipped += item.skipped
        keys = batch_keys(self.spec)
        if item.slot is not None:
            buffer, lease = self._ring.lend(item.slot)
            batch = Batch(batch_from_buffer(item.parts, buffer, keys))
            batch.lease = lease
            return batch
        buffer = item.buffer.numpy() if torch.is_tensor(item.buffer) else item.buffer
        batch = Batch(batch_from_buffer(item.parts, buffer, keys))
        if self.pin_memory and torch.cuda.is_available():
            for k, v in batch.items():
                if torch.is_tensor(v):
                    batch[k] = v.pin_memory()
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The rest of the current epoch; afterwards the loader moves on to the next epoch."""
        if self._active is not None:  # an epoch left early: stop its workers, they hold ring slots
            self._stop_active()
        it = iter(self._dataloader())
        self._active = it
        complete = False
        try:
            for item in it:
                batch = self._receive(item)
                self.position += self.samples_per_step
                yield batch
            complete = True
        finally:
            if complete:
                self._active = None  # persistent workers wait, idle, for the next epoch
            else:
                self._stop_active()
        self.epoch += 1
        self.position = 0

    def _stop_active(self) -> None:
        """Stop the workers of an epoch left early (or of every epoch, on close), so that their ring
        slots can be reused."""
        it, self._active = self._active, None
        if it is None and self._loader is not None:
            it = getattr(self._loader, "_iterator", None)
        self._loader = None
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def close(self) -> None:
        """Stop workers and release the ring (also done when the loader is garbage-collected)."""
        self._stop_active()
        if self._ring is not None:
            self._ring.close()
            self._ring = None
            self.dataset.ring = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the kernel frees the memory anyway
            pass

    def to_model_inputs(self, batch: Mapping[str, Any], device: torch.device | str = "cpu", exact: bool = True) -> dict:
        """Finish a batch on `device`: normalised float32 inputs, int64 labels (see trainer.data.normalize).

        On CPU the returned tensors are fresh or ones of an earlier batch that nothing holds any more
        (`OutputPool`): keeping a batch's inputs, or a view of them, keeps them intact.
        """
        return to_model_inputs(batch, self.spec, device, exact, pool=self._outputs)

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
