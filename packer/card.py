"""`<out>/README.md`: a Hugging Face dataset card for a packed dataset, written with the index.

The YAML front matter is what the Hub and `datasets` read: the licence (`etalab-2.0`, the
FLAIR-HUB data licence), tags, and `configs[].data_files` so that
`datasets.load_dataset(<folder or Hub repo>, streaming=True)` finds the shards of each split
(without it, `datasets` would take `index.parquet` for the data). `dataset_info.features` declares
every member, so `datasets` does not infer the schema from the first samples, which fails as soon
as patches differ in the modalities they have. The human part is generated from the manifest and
the index: counts per split and domain, modalities, class tables in the official colours, the
pack options, and how to read the shards with plain webdataset, `datasets` and flair-stream.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from packer import schema
from packer.shardformat.columns import COUNT_COLUMNS, checksum_column, dates_column
from packer.shardformat.encoding import codec_summary, member_suffixes
from packer.shardformat.names import (ARRAY_SUFFIX, META_SUFFIX, SHUFFLED_ARRAY_SUFFIX, member_key, member_name,
                                      meta_member_name, wds_member_key)

LICENSE = "etalab-2.0"
HF_SPLIT_NAME = r"^\w+(\.\w+)*$"
"""Split names `datasets` accepts; other names are packed but left out of `configs`."""

CITATION_BIBTEX = """@article{ign2025flairhub,
  doi = {10.13140/RG.2.2.30183.73128/1},
  url = {https://arxiv.org/pdf/2211.12979.pdf},
  author = {Garioud, Anatol and Giordano, Sébastien and David, Nicolas and Gonthier, Nicolas},
  title = {FLAIR-HUB: Large-scale Multimodal Dataset for Land Cover and Crop Mapping},
  publisher = {arXiv},
  year = {2025}
}"""
"""As published in the FLAIR-HUB reference README (IGNF/FLAIR-HUB)."""

CITATION_TEXT = ("Anatol Garioud, Sébastien Giordano, Nicolas David, Nicolas Gonthier. FLAIR-HUB: Large-scale "
                 "Multimodal Dataset for Land Cover and Crop Mapping. (2025). "
                 "DOI: https://doi.org/10.13140/RG.2.2.30183.73128/1")

def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def hf_splits(manifest: Mapping[str, Any]) -> list[str]:
    """The splits listed in the card's `configs` (those whose names `datasets` accepts)."""
    import re

    return [s for s in manifest["splits"] if re.match(HF_SPLIT_NAME, s) and manifest["splits"][s]["shards"]]


def packed_modalities(manifest: Mapping[str, Any]) -> list[str]:
    """The packed modalities in schema order (the manifest's JSON has its keys sorted)."""
    return [m for m in schema.MODALITY_NAMES if m in manifest["modalities"]]


def features(manifest: Mapping[str, Any]) -> list[dict]:
    """`dataset_info.features` in the card's YAML form: the JSON metadata, one nested list per
    modality member (`(bands, H, W)` of its dtype), and webdataset's `__key__` / `__url__`."""
    out: list[dict] = [{"name": META_SUFFIX, "dtype": "json"}]
    suffixes = member_suffixes(manifest.get("codec"))
    for name in packed_modalities(manifest):
        if suffixes[name] == SHUFFLED_ARRAY_SUFFIX:  # the builder has no Blosc decoder: it hands out the bytes
            out.append({"name": member_key(name, suffixes[name]), "dtype": "binary"})
        else:
            out.append({"name": member_key(name), "list": {"list": {"list": manifest["modalities"][name]["dtype"]}}})
    out += [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"}]
    return out


def front_matter(manifest: Mapping[str, Any]) -> dict:
    n = manifest["index"]["rows"]
    return {
        "license": LICENSE,
        "pretty_name": "FLAIR-HUB (flair-stream shards)",
        "task_categories": ["image-segmentation"],
        "tags": ["remote-sensing", "earth-observation", "land-cover", "crop-mapping", "multimodal",
                 "sentinel-2", "sentinel-1", "aerial-imagery", "webdataset", "geoparquet", "flair-hub"],
        "size_categories": [_size_category(n)],
        "configs": [{"config_name": "default", "default": True,
                     "data_files": [{"split": s, "path": f"{s}/*.tar"} for s in hf_splits(manifest)]}],
        "dataset_info": {"config_name": "default", "features": features(manifest)},
    }


def _table(header: list[str], rows: list[list[Any]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |",
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows)]


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def _split_table(manifest: Mapping[str, Any]) -> list[str]:
    rows = [[s, f"{v['samples']:,}", v["shards"], _mb(v["bytes"])] for s, v in manifest["splits"].items()]
    rows.append(["**all**", f"{manifest['index']['rows']:,}", len(manifest["shards"]),
                 _mb(sum(s["bytes"] for s in manifest["shards"]))])
    return _table(["split", "samples", "shards", "MB"], rows)


def _domain_table(index: pa.Table, splits: list[str]) -> list[str]:
    keys = [f"{d}-{y:04d}" for d, y in zip(index.column("domain").to_pylist(), index.column("year").to_pylist())]
    counts = Counter(zip(keys, index.column("split").to_pylist()))
    rows = []
    for key in sorted(set(keys)):
        per = [counts.get((key, s), 0) for s in splits]
        rows.append([key, *[f"{c:,}" if c else "" for c in per], f"{sum(per):,}"])
    return _table(["domain-year", *splits, "total"], rows)


def _modality_table(manifest: Mapping[str, Any], index: pa.Table) -> list[str]:
    present = Counter(m for mods in index.column("modalities").to_pylist() for m in mods)
    rows = []
    for name in packed_modalities(manifest):
        info = manifest["modalities"][name]
        mod = schema.modality(name)
        shape = f"{info['bands_per_date']}×T × {info['size_px']}×{info['size_px']}" if info["time_series"] \
            else f"{info['bands_per_date']} × {info['size_px']}×{info['size_px']}"
        dates = ""
        col = dates_column(name)
        if col in index.column_names and index.column(col).null_count < index.num_rows:
            mm = pc.min_max(index.column(col)).as_py()
            dates = f"T = {mm['min']}–{mm['max']}"
        rows.append([f"`{name}`", mod.description, info["dtype"], shape, f"{info['gsd_m']:g}",
                     ", ".join(info["band_names"]), f"{present.get(name, 0):,}", dates])
    return _table(["modality", "what", "dtype", "bands × pixels", "GSD (m)", "bands", "samples", "dates"], rows,
                  align="lllllrrl")


def _class_table(task: str, index: pa.Table) -> list[str]:
    col = COUNT_COLUMNS[task]
    totals = None
    if col in index.column_names:
        values = [c for c in index.column(col).to_pylist() if c is not None]
        if values:
            totals = [sum(v[i] for v in values) for i in range(len(values[0]))]
    all_px = sum(totals) if totals else 0
    rows = []
    for c in schema.CLASS_TABLES[task]:
        swatch = f'<span style="color:{c.color}">■</span> `{c.color}`'
        share = f"{100 * totals[c.value] / all_px:.2f}" if totals and all_px else "–"
        rows.append([c.value, c.name, swatch, share])
    return _table(["value", "class", "colour", "% of pixels here"], rows, align="rllr")


def _blosc_howto(manifest: Mapping[str, Any]) -> list[str]:
    """How to read the `.npy.blosc` members of a `--shuffle` pack (nothing for a default pack)."""
    shuffled = [m for m, s in member_suffixes(manifest.get("codec")).items()
                if s == SHUFFLED_ARRAY_SUFFIX and m in manifest["modalities"]]
    if not shuffled:
        return []
    return [
        f"**`{SHUFFLED_ARRAY_SUFFIX}` members.** This pack was made with `flair-pack --shuffle`: "
        f"{', '.join(f'`{m}`' for m in shuffled)} are stored as `{member_name('<patch_id>', '<MODALITY>', SHUFFLED_ARRAY_SUFFIX)}`, "
        "exactly one Blosc chunk (c-blosc 1 format: byte-shuffle, then LZ4HC or zstd) of the same `.npy` file. "
        "[numcodecs](https://numcodecs.readthedocs.io) (zarr's codec library) or python-blosc2 decode it; "
        "Hugging Face `datasets` hands these members out as bytes. Blosc chunks carry no checksum: the index's "
        "xxh3_64 is what detects a damaged one.", "", "```python",
        "import io, numcodecs.blosc, numpy as np, webdataset as wds",
        "",
        "def npy_blosc(data):",
        "    return np.load(io.BytesIO(numcodecs.blosc.decompress(data)), allow_pickle=False)",
        "",
        f'handlers = [wds.handle_extension("{ARRAY_SUFFIX[1:]}", npy_zst), wds.handle_extension("{SHUFFLED_ARRAY_SUFFIX[1:]}", npy_blosc)]',
        "for sample in wds.WebDataset(urls, shardshuffle=False).decode(*handlers):",
        f'    dem = sample["{wds_member_key("DEM_ELEV", SHUFFLED_ARRAY_SUFFIX)}"]',
        "```", "",
        "or `flair_stream.wds_decoder`, the handler for every member of either kind: "
        "`wds.WebDataset(urls).decode(flair_stream.wds_decoder)`.", "",
    ]


def _read_howto(manifest: Mapping[str, Any]) -> list[str]:
    split = next(iter(manifest["splits"]), "train")
    blosc = _blosc_howto(manifest)
    lines = [
        "## How to read it", "",
        f"Every sample is one patch: `{meta_member_name('<patch_id>')}` (metadata: georeference, dates, source "
        f"paths) and one `{member_name('<patch_id>', '<MODALITY>')}` per modality"
        f"{' (or `' + SHUFFLED_ARRAY_SUFFIX + '`, below)' if blosc else ''}, the array "
        "`rasterio.open(tif).read()` returns (`(bands, H, W)`, original dtype; series date-major), as `.npy` in a "
        "zstd frame.",
        f"Each `{ARRAY_SUFFIX}` member is exactly one zstd frame of the `.npy` file `np.save` writes (no pickle, no "
        "filter): any zstd + numpy client decodes it. The index keeps every member's xxh3_64 "
        f"(`{checksum_column('<MODALITY>')}`, `{checksum_column(META_SUFFIX)}`) to check a ranged read.", "",
    ]
    lines += [
        "**Plain webdataset**", "", "```python",
        "import io, numpy as np, webdataset as wds, zstandard",
        "",
        "def npy_zst(data):",
        "    return np.load(io.BytesIO(zstandard.ZstdDecompressor().decompress(data)), allow_pickle=False)",
        "",
        f'urls = "{split}/{split}-{{000000..{manifest["splits"][split]["shards"] - 1:06d}}}.tar"' if manifest["splits"]
        else 'urls = "train/train-{000000..000009}.tar"',
        f'for sample in wds.WebDataset(urls, shardshuffle=False).decode(wds.handle_extension("{ARRAY_SUFFIX[1:]}", npy_zst)):',
        f'    aerial = sample["{wds_member_key("AERIAL_RGBI")}"]  # webdataset lower-cases member extensions',
        "```", "",
    ]
    lines += blosc
    lines += [
        "**Hugging Face `datasets`** (the `configs` above map each split to its shards)", "", "```python",
        "from datasets import load_dataset",
        "",
        'ds = load_dataset("<this folder or owner/repo>", streaming=True)',
        f'sample = next(iter(ds["{split}"]))  # {{"{META_SUFFIX}": {{...}}, "{member_key("AERIAL_RGBI")}": [[[...]]], ...}}',
        "```", "",
        "**flair-stream** (`pip install flair-stream`: raw samples, random access by patch id, and the "
        "reference's preprocessing for training)", "", "```python",
        "import flair_stream",
        "",
        'ds = flair_stream.open_dataset("<this folder, s3://..., https://... or hf://datasets/owner/repo>")',
        f'for s in ds.samples("{split}", modalities=["AERIAL_RGBI", "AERIAL_LABEL-COSIA"]):',
        '    s["arrays"]["AERIAL_RGBI"], s["meta"]["bounds"]',
        'loader = ds.loader("train", config="LC-D", batch_size=8)  # a built-in FLAIR-HUB config',
        "```", "",
        "**The index** `index.parquet` is GeoParquet (EPSG:2154 footprints): open it in QGIS as a vector layer, or",
        "", "```python",
        "import geopandas",
        "",
        'patches = geopandas.read_parquet("index.parquet")  # one row per sample, with shard offsets and class counts',
        "```",
    ]
    return lines


def _source_label(src: str | None) -> str | None:
    """A URL (e.g. `hf://datasets/IGNF/FLAIR-HUB@<commit>`) says where the data came from to anyone
    who reads the card; a path on the packing machine says nothing to them (and leaks its layout):
    it stays in manifest.json only."""
    if src is None or "://" in src:
        return src
    return "local FLAIR-HUB files (the path is in manifest.json)"


def dataset_card(manifest: Mapping[str, Any], index: pa.Table) -> str:
    """The README.md of a packed dataset (see the module docstring)."""
    head = yaml.safe_dump(front_matter(manifest), sort_keys=False, allow_unicode=True)
    splits = list(manifest["splits"])
    p, codec = manifest["parameters"], manifest["codec"]
    total = sum(s["bytes"] for s in manifest["shards"])
    left_out = [s for s in splits if s not in hf_splits(manifest)]
    lines = [
        "---", head.rstrip(), "---", "",
        "# FLAIR-HUB, packed for streaming", "",
        "[FLAIR-HUB](https://ignf.github.io/FLAIR/flairhub) (IGN) is a multimodal land-cover and crop-type dataset "
        "over France: 512×512-pixel patches of 20 cm aerial imagery with historical aerial photos, elevation, SPOT 6-7, "
        "yearly Sentinel-2 and Sentinel-1 series, CoSIA land-cover labels (19 classes) and LPIS crop-type labels "
        "(23 classes at level 1).",
        f"This copy holds {manifest['index']['rows']:,} patches in {len(manifest['shards'])} WebDataset tar shards "
        f"({_mb(total)} MB), written by flair-stream's `flair-pack` {manifest['packer_version']} "
        f"(format {manifest['format_version']}), with a GeoParquet index and a checksummed manifest.", "",
        "```", "<split>/<split>-NNNNNN.tar   shards (samples shuffled across domains)",
        "index.parquet                one row per sample: shard, byte offsets of every member, footprint, class counts",
        "manifest.json                pack options, modality table, sha256 of every shard", "```", "",
        "## Splits", "", *_split_table(manifest), "",
    ]
    if left_out:
        lines += [f"Split(s) {', '.join(left_out)} are not listed in `configs` (empty, or a name `datasets` refuses).", ""]
    lines += ["## Domains", "", "Patches per domain-year and split:", "", *_domain_table(index, splits), "",
              "## Modalities", "", *_modality_table(manifest, index), "",
              "T: dates per sample (Sentinel series are yearly; the S2 mask has the S2 dates). "
              "Acquisition dates are in each sample's JSON.", ""]
    for task in schema.LABEL_MODALITIES:
        if task in manifest["modalities"]:
            level = " (level 1, band 1 of 3)" if task == "ALL_LABEL-LPIS" else ""
            lines += [f"## Classes: `{task}`{level}", "", *_class_table(task, index), ""]
    options = {
        "source": _source_label(p.get("src")), "splits from": p.get("split_source"), "seed": p.get("seed"),
        "shuffled": not p.get("keep_order", False), "shard size target": f"{p.get('shard_size', 0) / 1e6:g} MB",
        "codec": codec_summary(codec),
        "modalities": ", ".join(p.get("modalities", [])), "on error": p.get("on_error"),
    }
    if p.get("num_parts", 1) > 1:
        options["parts"] = f"{p['num_parts']} (merged)" if p.get("part") is None else f"part {p['part']} of {p['num_parts']}"
    lines += ["## Pack options", "", *_table(["option", "value"], [[k, f"`{v}`"] for k, v in options.items()], "ll"), ""]
    if manifest.get("skipped"):
        lines += [f"{len(manifest['skipped'])} patch(es) were skipped (listed in `manifest.json`).", ""]
    lines += _read_howto(manifest)
    lines += ["", "## Citation", "", "```bibtex", CITATION_BIBTEX, "```", "", CITATION_TEXT, "",
              "## License", "",
              "The FLAIR-HUB data are published by IGN under the [Licence Ouverte / Open Licence 2.0]"
              "(https://github.com/etalab/licence-ouverte/blob/master/open-licence.md) (Etalab 2.0), compatible with "
              "CC-BY: reuse is free provided the source (IGN, FLAIR-HUB) is acknowledged.", ""]
    return "\n".join(lines)
