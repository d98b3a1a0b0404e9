"""A tree in the Hugging Face Hub's zip layout: `data/<DOMAIN>-<YEAR>_<MODALITY>.zip` per modality
folder and `data/GLOBAL_ALL_MTD.zip`, members keeping the tree's paths without `data/`
(as on the Hub's `IGNF/FLAIR-HUB` dataset).

Zips are deterministic (sorted members, folder entries first as `zip -r` writes them, a fixed
1980-01-01 timestamp, Unix permissions), so the same tree gives byte-identical zips.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from packer.atomic import atomic_path
from packer.schema import GLOBAL_MTD_FOLDER, parse_folder_name

COMPRESSIONS = {"deflate": zipfile.ZIP_DEFLATED, "store": zipfile.ZIP_STORED}
DATA_LEVEL = "data"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _info(name: str, is_dir: bool, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.create_system = 3  # Unix, whatever the machine writing it
    info.external_attr = ((0o40755 << 16) | 0x10) if is_dir else (0o100644 << 16)
    info.compress_type = zipfile.ZIP_STORED if is_dir else compression
    return info


def zip_folder(folder: Path, zip_path: Path, compression: str = "deflate") -> Path:
    """`folder` (and everything under it) -> `zip_path`, members named `<folder name>/...`."""
    method = COMPRESSIONS[compression]
    root = folder.parent
    with atomic_path(zip_path, keep_suffix=True) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=method, compresslevel=6 if method == zipfile.ZIP_DEFLATED else None) as zf:
            zf.writestr(_info(f"{folder.name}/", True, method), b"")
            for path in sorted(folder.rglob("*")):
                name = path.relative_to(root).as_posix()
                if path.is_dir():
                    zf.writestr(_info(f"{name}/", True, method), b"")
                    continue
                with path.open("rb") as src, zf.open(_info(name, False, method), "w", force_zip64=path.stat().st_size > 2**31) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    return zip_path


def zip_tree(tree: Path, out: Path, compression: str = "deflate") -> list[Path]:
    """Every modality folder and GLOBAL_ALL_MTD of `tree` as `out/data/<folder>.zip`."""
    written = []
    for folder in sorted(p for p in Path(tree).iterdir() if p.is_dir()):
        try:
            parse_folder_name(folder.name)
        except ValueError:
            if folder.name != GLOBAL_MTD_FOLDER:
                continue
        written.append(zip_folder(folder, Path(out) / DATA_LEVEL / f"{folder.name}.zip", compression))
    return written
