"""Official split CSVs: `patch_id` + one `../`-relative path column per modality.

The toy CSVs use `,`, third-party loaders read the full ones with `;`: the delimiter is sniffed
from the header line. The split of a CSV comes from its file name (TRAIN/VALID/TEST) or from an
explicit `split=path` argument.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from packer import schema
from packer.errors import PackError

_SPLIT_WORDS = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}


@dataclass(frozen=True)
class CsvRow:
    patch_id: str
    split: str
    files: dict[str, str]  # modality -> path relative to the dataset root ('' when absent)
    csv_path: str


def split_of_csv(path: Path) -> str:
    """`FLAIR-HUB_TOY-DATASET_TRAIN.csv` -> `train` (the word must be unambiguous)."""
    words = {_SPLIT_WORDS[w] for w in re.split(r"[^a-z]+", path.stem.lower()) if w in _SPLIT_WORDS}
    if len(words) != 1:
        raise PackError(path, "cannot tell the split from the CSV name; pass it as SPLIT=PATH (e.g. train=my.csv)")
    return words.pop()


def parse_csv_argument(arg: str) -> tuple[str, Path]:
    """`train=path.csv` or `path.csv` -> (split, path)."""
    if "=" in arg and not Path(arg).exists():
        split, _, p = arg.partition("=")
        return split, Path(p)
    return split_of_csv(Path(arg)), Path(arg)


def read_split_csv(path: Path, split: str) -> list[CsvRow]:
    if not path.is_file():
        raise PackError(path, "split CSV not found")
    text = path.read_text(encoding="utf-8-sig")
    header = text.splitlines()[0] if text else ""
    delimiter = ";" if header.count(";") > header.count(",") else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    if not reader.fieldnames or "patch_id" not in reader.fieldnames:
        raise PackError(path, f"no 'patch_id' column in the header {header!r}")
    mods = [c for c in reader.fieldnames if c in schema.MODALITIES]
    rows = []
    for line_no, rec in enumerate(reader, start=2):
        pid = (rec.get("patch_id") or "").strip()
        try:
            schema.PatchId.parse(pid)
        except ValueError as exc:
            raise PackError(f"{path}:{line_no}", str(exc)) from None
        files = {}
        for m in mods:
            cell = (rec.get(m) or "").strip()
            # Official cells are relative to a folder beside the data root: drop the leading '../'.
            while cell.startswith("../"):
                cell = cell[3:]
            files[m] = cell
        rows.append(CsvRow(pid, split, files, str(path)))
    return rows
