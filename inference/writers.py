"""GeoTIFF / COG writing for class maps and class probabilities, with the official colours.

A one-band argmax map carries the class colour table (so any GIS shows the official colours
without a style) and the class names as GDAL metadata (`CLASS_<i>=<name>`, stored inside the
TIFF); a QGIS style sidecar (`<file>.qml`, which QGIS loads automatically) adds the names to
the legend, since GeoTIFF cannot hold category names itself. Probability rasters get one band
per class, described by the class name.

Files are written under a temporary name in the same folder and renamed when complete, so a
reader never sees half a raster.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from xml.sax.saxutils import quoteattr

import numpy as np
import rasterio
from affine import Affine
from rasterio.shutil import copy as rio_copy

from packer.atomic import atomic_path, write_text_atomic
from packer.schema import official_classes

COMPRESSIONS = {"lzw": "lzw", "zstd": "zstd", "deflate": "deflate"}
BLOCK_CHOICES = (512, 256, 128, 64, 32, 16)


def pick_blocksize(stride_px: int | None, default: int = 512) -> int:
    """A GeoTIFF block size that divides `stride_px`, so each tile core fills whole blocks.

    Whole-block writes mean every compressed block is written exactly once; when no candidate
    divides the stride, GDAL still writes correctly (partial blocks are read back and merged).
    """
    if stride_px:
        for b in BLOCK_CHOICES:
            if stride_px % b == 0:
                return b
    return default


def output_profile(width: int, height: int, count: int, crs: Any, transform: Affine,
                   compression: str = "lzw", blocksize: int = 512) -> dict[str, Any]:
    """A tiled uint8 GTiff profile (BIGTIFF when it might pass 4 GB)."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {compression!r}")
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": int(width), "height": int(height), "count": int(count), "dtype": "uint8",
        "crs": crs, "transform": transform, "compress": COMPRESSIONS[compression],
        "interleave": "band" if count > 1 else "pixel", "BIGTIFF": "IF_SAFER",
    }
    if width >= 16 and height >= 16:
        b = min(blocksize, 1 << (min(width, height).bit_length() - 1))
        b = max(16, b - b % 16)
        profile.update(tiled=True, blockxsize=b, blockysize=b)
    return profile


def map_colors(task: str, n_classes: int, channel: int = 1) -> list[tuple[int, int, int]] | None:
    """The official colours of a written class map (`packer.schema.official_classes`); None when the
    map is another nomenclature (`label_channel_nomenclature` other than 1, or other classes)."""
    table = official_classes(task, n_classes) if channel == 1 else None
    return [c.rgb for c in table] if table is not None else None


def colormap(colors: Sequence[tuple[int, int, int]]) -> dict[int, tuple[int, int, int, int]]:
    return {i: (*rgb, 255) for i, rgb in enumerate(colors)}


def describe(dst: Any, class_names: Sequence[str], task: str, kind: str,
             colors: Sequence[tuple[int, int, int]] | None) -> None:
    """Embed the class table: names as metadata, a colour table (argmax) or band names (class_prob)."""
    tags = {"TASK": task, "OUTPUT_TYPE": kind, "N_CLASSES": str(len(class_names))}
    tags.update({f"CLASS_{i}": n for i, n in enumerate(class_names)})
    dst.update_tags(**tags)
    if kind == "argmax":
        dst.set_band_description(1, f"{task} class")
        if colors is not None:
            dst.write_colormap(1, colormap(colors))
    else:
        for i, n in enumerate(class_names):
            dst.set_band_description(i + 1, f"p({n}) x255")


@contextlib.contextmanager
def open_output(path: str | Path, profile: Mapping[str, Any]) -> Iterator[Any]:
    """Open `path` for writing under its temporary name; renamed on success, removed on error."""
    with atomic_path(path) as tmp:
        with rasterio.Env(GDAL_PAM_ENABLED="NO"):  # everything goes inside the TIFF, no .aux.xml
            with rasterio.open(tmp, "w", **profile) as dst:
                yield dst


def write_raster(path: str | Path, data: np.ndarray, crs: Any, transform: Affine, class_names: Sequence[str],
                 task: str, kind: str = "argmax", colors: Sequence[tuple[int, int, int]] | None = None,
                 compression: str = "lzw") -> Path:
    """Write a whole `(H, W)` class map or `(C, H, W)` probability array (patch-level outputs)."""
    arr = data[np.newaxis] if data.ndim == 2 else data
    profile = output_profile(arr.shape[2], arr.shape[1], arr.shape[0], crs, transform, compression)
    with open_output(path, profile) as dst:
        describe(dst, class_names, task, kind, colors)  # the colour table must precede the pixels
        dst.write(arr.astype(np.uint8, copy=False))
    if kind == "argmax":
        write_qml(path, class_names, colors)
    return Path(path)


def to_cog(src: str | Path, dst: str | Path, compression: str = "lzw", blocksize: int = 512) -> Path:
    """Convert a GeoTIFF into a Cloud Optimized GeoTIFF (tiled, nearest overviews for classes)."""
    src, dst = Path(src), Path(dst)
    with atomic_path(dst) as tmp, rasterio.Env(GDAL_PAM_ENABLED="NO"):
        rio_copy(str(src), str(tmp), driver="COG", COMPRESS=COMPRESSIONS[compression].upper(),
                 BLOCKSIZE=blocksize, OVERVIEW_RESAMPLING="NEAREST", BIGTIFF="IF_SAFER")
    return dst


def write_qml(raster_path: str | Path, class_names: Sequence[str], colors: Sequence[tuple[int, int, int]] | None) -> Path | None:
    """A QGIS paletted style beside the raster (`<stem>.qml`), naming every class in the legend."""
    if colors is None:
        return None
    entries = "\n".join(
        f'        <paletteEntry value="{i}" color="#{r:02x}{g:02x}{b:02x}" alpha="255" label={quoteattr(n)}/>'
        for i, (n, (r, g, b)) in enumerate(zip(class_names, colors))
    )
    text = (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28" styleCategories="Symbology">\n'
        "  <pipe>\n"
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1">\n'
        "      <colorPalette>\n"
        f"{entries}\n"
        "      </colorPalette>\n"
        "    </rasterrenderer>\n"
        "  </pipe>\n"
        "</qgis>\n"
    )
    qml = Path(raster_path).with_suffix(".qml")
    return write_text_atomic(qml, text)


def probabilities_u8(logits: np.ndarray) -> np.ndarray:
    """`(C, H, W)` logits -> softmax x 255 rounded to uint8 (the reference's `class_prob`).

    Computed in float64 so that the sum over classes stays within C/2 of 255 after rounding.
    """
    z = logits.astype(np.float64)
    z -= z.max(axis=0, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=0, keepdims=True)
    return np.rint(z * 255.0).astype(np.uint8)
