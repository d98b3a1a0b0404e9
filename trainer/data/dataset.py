"""`open_dataset(url)`: a packed FLAIR-HUB dataset from Python, without a training config.

    ds = open_dataset("s3://bucket/flair-hub")        # or a folder, https://..., hf://datasets/...
    ds.samples("train", modalities=["AERIAL_RGBI", "AERIAL_LABEL-COSIA"])   # raw arrays + metadata
    ds["D006-2020_FF-S1-14_5-5"]                       # one sample by patch id (one ranged read)
    ds.index                                           # the index as a pyarrow Table (GeoParquet)
    ds.loader("train", config="LC-D", batch_size=8)    # the preprocessed training stream (torch)

A raw sample is `{"patch_id", "meta", "arrays": {MODALITY: ndarray}}` (`packer.shardformat.reader`): the
arrays exactly as `rasterio.open(tif).read()` returns them, the metadata the sample's JSON.

This module is a thin layer over the loader's own parts, so what users read is what training
reads: `sources` (every URL scheme), `catalog` (manifest, index, selections), `reader` (ranged
reads of only the members asked for) and `loader.StreamingLoader` for `loader()`. Raw reading
never imports torch. Without pyarrow, `samples()` still works: it streams each shard of the
split front to back (`packer.shardformat.reader.iter_tar_samples`), reading the manifest only; selections
that need the index (class filters, random access, `index`) then ask for pyarrow.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

from packer import schema
from packer.shardformat.reader import array_keys, damaged_members, iter_tar_samples, members_of_blob, raw_sample
from packer.storage.read import Source, open_source

if TYPE_CHECKING:  # pragma: no cover - types only
    import pyarrow as pa

    from trainer.data.catalog import Catalog
    from trainer.data.loader import StreamingLoader


class PackedDataset:
    """A packed dataset (the output of `flair-pack`) opened for reading; see the module docstring."""

    def __init__(self, url: str | Path, *, retries: int = 5, s3_endpoint_url: str | None = None,
                 hf_endpoint: str | None = None) -> None:
        self.url = str(url)
        self.source: Source = open_source(self.url, retries=retries, s3_endpoint_url=s3_endpoint_url,
                                          hf_endpoint=hf_endpoint)
        try:
            self.manifest: dict[str, Any] = json.loads(self.source.read_all(schema.MANIFEST_FILE))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.source.url(schema.MANIFEST_FILE)}: no manifest (not a packed dataset, "
                                    "or the pack did not finish)") from None
        self._catalog: Catalog | None = None
        self._rows: dict[str, int] | None = None

    # ---------------------------------------------------------------- what is there
    def __repr__(self) -> str:
        splits = ", ".join(f"{k}: {v}" for k, v in self.splits.items())
        return f"PackedDataset({self.url!r}, {len(self)} samples ({splits}), {len(self.modalities)} modalities)"

    def __len__(self) -> int:
        return int(self.manifest["index"]["rows"])

    @property
    def format_version(self) -> int:
        """The pack's shard format (the manifest's; `packer.shardformat.encoding` reads 1 and 2)."""
        return int(self.manifest.get("format_version", 1))

    @property
    def splits(self) -> dict[str, int]:
        """Samples per split, from the manifest, in index order (train, valid, test, then others)."""
        order = list(dict.fromkeys([s["split"] for s in self.manifest["shards"]] + sorted(self.manifest["splits"])))
        return {s: int(self.manifest["splits"][s]["samples"]) for s in order if s in self.manifest["splits"]}

    @property
    def modalities(self) -> list[str]:
        """The modalities the dataset was packed with, in schema order (a sample may still lack some)."""
        return [m for m in schema.MODALITY_NAMES if m in self.manifest["modalities"]]

    @property
    def catalog(self) -> "Catalog":
        """Manifest + index, read once (needs pyarrow)."""
        if self._catalog is None:
            try:
                from trainer.data.catalog import Catalog
            except ImportError as exc:
                raise ImportError(f"reading {schema.INDEX_FILE} needs pyarrow ({exc}); without it only "
                                  "samples(split, modalities, domains=..., patch_ids=...) works") from None
            self._catalog = Catalog(self.source)
        return self._catalog

    @property
    def index(self) -> "pa.Table":
        """The index, one row per sample (`to_pandas()`, or geopandas on the file: it is GeoParquet)."""
        return self.catalog.table

    def patch_ids(self, split: str | None = None) -> list[str]:
        """Patch ids in index order, of one split or of all."""
        t = self.index
        ids = t.column("patch_id").to_pylist()
        if split is None:
            return ids
        return [p for p, s in zip(ids, t.column("split").to_pylist()) if s == split]

    def __contains__(self, patch_id: object) -> bool:
        return patch_id in self._row_numbers()

    def _row_numbers(self) -> dict[str, int]:
        if self._rows is None:
            self._rows = {p: i for i, p in enumerate(self.index.column("patch_id").to_pylist())}
        return self._rows

    # ---------------------------------------------------------------- raw samples
    def __getitem__(self, patch_id: str) -> dict[str, Any]:
        """Every modality of one sample, by patch id (one ranged read of its span in the shard)."""
        return self.sample(patch_id)

    def sample(self, patch_id: str, modalities: Sequence[str] | None = None) -> dict[str, Any]:
        """One raw sample by patch id: all its modalities, or only `modalities` (only those bytes are read)."""
        if patch_id not in self._row_numbers():
            raise KeyError(f"{patch_id!r} is not in {self.source.url(schema.INDEX_FILE)}")
        row = self.index.slice(self._row_numbers()[patch_id], 1).to_pylist()[0]
        if modalities is not None:
            lacking = [m for m in modalities if m not in row["modalities"]]
            if lacking:
                raise KeyError(f"{patch_id} has no {', '.join(lacking)} (it has {', '.join(row['modalities'])})")
            return next(self.samples(None, modalities, patch_ids=[patch_id]))
        blob = self.source.read_range(row["shard"], row["offset"], row["size"])
        members = members_of_blob(blob)
        if self.format_version >= 2:  # the index's checksums (a Blosc chunk has none of its own)
            damaged = damaged_members(patch_id, members, row)
            if damaged:
                from trainer.data.reader import SampleError

                name, got, want = damaged[0]
                raise SampleError(self.source.url(row["shard"]), patch_id, name,
                                  f"xxh3_64 {got:016x} differs from the index's {want:016x} (damaged member)")
        return raw_sample(patch_id, members, format_version=self.format_version)

    def samples(self, split: str | None = "train", modalities: Sequence[str] | None = None, *,
                domains: Iterable[str] = (), patch_ids: Iterable[str] | str | None = None,
                contains_class: Mapping[str, int] | None = None,
                min_class_share: Mapping[str, Mapping[int, float]] | None = None) -> Iterator[dict[str, Any]]:
        """Raw samples of `split` (None: all splits) in index order (shard by shard).

        `modalities`: read and decode only these, and only samples that have all of them
        (None: every modality each sample has). The filters are the loader's `data.select` keys:
        `domains` (`D006` or `D006-2020`), `patch_ids` (a list or a text file), `contains_class`
        ({task: class}) and `min_class_share` ({task: {class: fraction}}), all answered from the
        index without reading a shard.
        """
        if modalities is not None:
            modalities = list(modalities)
            unknown = [m for m in modalities if m not in schema.MODALITIES]
            if unknown:
                raise KeyError(f"unknown modality {unknown}; expected some of {', '.join(schema.MODALITY_NAMES)}")
        if not _pyarrow_available():
            if contains_class or min_class_share:
                raise ImportError("class filters read the index's class counts, which needs pyarrow")
            return self._streamed(split, modalities, domains, patch_ids)
        return self._ranged(split, modalities, domains, patch_ids, contains_class, min_class_share)

    def _ranged(self, split, modalities, domains, patch_ids, contains_class, min_class_share) -> Iterator[dict]:
        """Index path: a selection, then ranged reads of the members asked for."""
        from trainer.data.reader import SampleReader

        sel = self.catalog.select(split, modalities or [], domains=domains, patch_ids=patch_ids,
                                  contains_class=contains_class, min_class_share=min_class_share)
        if modalities is not None:
            reader = SampleReader(self.source, sel, modalities)
            return (reader.read(i) for i in range(len(sel)))
        return (self.sample(pid) for pid in sel.patch_ids)

    def _streamed(self, split, modalities, domains, patch_ids) -> Iterator[dict]:
        """Manifest path (no pyarrow): every shard of the split read front to back."""
        if split is not None and split not in self.manifest["splits"]:
            raise KeyError(f"split {split!r} not in the dataset (has {sorted(self.manifest['splits'])})")
        absent = [m for m in modalities or [] if m not in self.manifest["modalities"]]
        if absent:
            raise KeyError(f"the dataset has no {', '.join(absent)} (packed: {', '.join(self.modalities)})")
        if isinstance(patch_ids, str):
            patch_ids = [ln.strip() for ln in Path(patch_ids).read_text().splitlines() if ln.strip()]
        wanted_ids = set(patch_ids) if patch_ids is not None else None
        return self._stream_shards(split, modalities, set(domains or ()), wanted_ids)

    def _stream_shards(self, split, modalities, wanted_domains, wanted_ids) -> Iterator[dict]:
        for shard in self.manifest["shards"]:
            if split is not None and shard["split"] != split:
                continue
            stream = io.BufferedReader(_ChunkStream(self.source.iter_chunks(shard["path"])), buffer_size=1 << 20)
            for pid, members in iter_tar_samples(stream, where=self.source.url(shard["path"])):
                if wanted_ids is not None and pid not in wanted_ids:
                    continue
                if wanted_domains:
                    p = schema.PatchId.parse(pid)
                    if p.domain not in wanted_domains and p.domain_year not in wanted_domains:
                        continue
                if modalities is not None and not set(modalities) <= set(array_keys(members)):
                    continue
                yield raw_sample(pid, members, modalities, format_version=self.format_version)

    # ---------------------------------------------------------------- training stream
    def loader(self, split: str = "train", config: Any = "flair-hub", *, batch_size: int | None = None,
               overrides: Iterable[str] = (), **kwargs: Any) -> "StreamingLoader":
        """The preprocessed, batched stream of `split`, exactly as `flair-train` builds it.

        `config`: a built-in name (`LC-A` ... `LPIS-K`, `flair-hub`, `demo`), a config folder or
        YAML file (overlays with `extends:` included), a list of them (layered), or a config
        mapping. `overrides` are `--set`-style `key=value` strings. Its `data.source` is replaced
        by this dataset; `kwargs` go to `StreamingLoader.from_config` (rank, world_size,
        num_workers, shuffle, augment, pin_memory). Needs torch.
        """
        from trainer.config import read_config_layers, validate_config
        from trainer.data.loader import StreamingLoader
        from trainer.train_config import apply_overrides

        if isinstance(config, Mapping):
            raw = copy.deepcopy(dict(config))
        else:
            raw = read_config_layers(config if isinstance(config, (list, tuple)) else [config])
        raw = apply_overrides(raw, overrides)
        raw.pop("train", None)  # flair-train's own section
        raw.setdefault("data", {})
        raw["data"] = dict(raw["data"] or {}, source=self.url)
        cfg = validate_config(raw)
        return StreamingLoader.from_config(cfg, split, source=self.source, batch_size=batch_size, **kwargs)

    # ---------------------------------------------------------------- pictures
    def plot(self, patch_id: str, path: str | Path | None = None, **kwargs: Any) -> Any:
        """`packer.plot.plot_sample` of one sample; returns the matplotlib Figure."""
        from packer.plot import plot_sample

        return plot_sample(self[patch_id], path, **kwargs)


def open_dataset(url: str | Path, **kwargs: Any) -> PackedDataset:
    """Open a packed dataset: a folder, `s3://bucket/prefix`, `https://host/path` or
    `hf://datasets/<owner>/<name>[@rev]/<path>` (keyword arguments: `PackedDataset`)."""
    return PackedDataset(url, **kwargs)


def _pyarrow_available() -> bool:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


class _ChunkStream(io.RawIOBase):
    """A read-only byte stream over an iterator of chunks (what tarfile's stream mode reads)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._current:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._current = memoryview(chunk)
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n
