"""The loader of a prediction run (`flair-infer`): one split, each sample once, in index order.

It differs from a training or validation loader (`StreamingLoader.from_config`) in four ways that
prediction needs: the config's `data.select` filters are not applied (a checkpoint's training
selection says nothing about what to predict), `limit` keeps the first samples only, the ranks
are always evened out by padding (`valid` marks the repeats), and labels are read only when
every sample of the split has them (otherwise the run predicts without scoring).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from trainer.data.catalog import Catalog
from trainer.data.loader import StreamingLoader
from trainer.data.loader_options import LoaderOptions
from trainer.data.sample import SampleSpec
from packer.storage.read import open_source


def prediction_loader(cfg: Mapping[str, Any], url: str, split: str, *, batch_size: int, num_workers: int = 0,
                      rank: int | None = None, world_size: int | None = None, limit: int | None = None,
                      pin_memory: bool = False) -> tuple[StreamingLoader, bool]:
    """This rank's loader over `split` of the shards at `url`, and whether the split is labelled
    for every task of `cfg["labels"]` (then the batches carry the labels, for metrics)."""
    data = cfg["data"]
    src = open_source(url, retries=data["retries"], s3_endpoint_url=data["s3_endpoint_url"], hf_endpoint=data["hf_endpoint"])
    catalog = Catalog(src)
    spec = SampleSpec.from_config(cfg, augment=False)
    labelled = labelled_split(catalog, split, list(cfg["labels"]))
    if not labelled:
        spec = dataclasses.replace(spec, tasks=())
    ids = catalog.select(split, spec.needed_modalities).patch_ids[:limit] if limit else None
    selection = catalog.select(split, spec.needed_modalities, patch_ids=ids)
    options = LoaderOptions(batch_size=batch_size, shuffle=False, uneven="pad", decode_threads=data["decode_threads"],
                            verify=data["verify"], num_workers=num_workers, pin_memory=pin_memory,
                            persistent_workers=False)  # one pass
    loader = StreamingLoader(src, catalog, selection, spec, options, rank=rank, world_size=world_size)
    return loader, labelled


def labelled_split(catalog: Catalog, split: str, tasks: Sequence[str]) -> bool:
    """True when `split` has samples and every one of them has a label for each of `tasks`."""
    t = catalog.table
    splits = t.column("split").to_pylist()
    mods = t.column("modalities").to_pylist()
    rows = [m for s, m in zip(splits, mods) if s == split]
    return bool(rows) and all(task in m for m in rows for task in tasks)
