"""Parameter parity with the FLAIR-HUB results table (the reference README).

For each of the 24 published configurations (Swin-Base/UPerNet, the reference's default model
config, CoSIA 19 / LPIS 23 classes, inputs 512/256/64/10 px, an auxiliary loss on every input of
multi-modal configurations), build FLAIR-UPerFuse on the meta device (no weights allocated) and
print the parameter count the way the reference's model summary counts it (encoders + task and
auxiliary decoders, no fusion convolutions), the table's PARA. value, and the whole model's total.
Exits 1 if any row differs from the table by more than 0.1 M, or if the whole-model total
differs from the reference implementation's (measured once, recorded below) by one parameter.

    python -m tools.param_table [--ids LC-A LPIS-H] [--arch swin_base_patch4_window12_384-upernet]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml
from tqdm import tqdm

from packer.schema import CLASS_TABLES
from trainer import builtin_config
from trainer.model import INPUT_KEYS, build_model

MODELS_YAML = builtin_config("flair-hub") / "config_models.yaml"
TOLERANCE_M = 0.1

# Tick columns of the results table -> input modalities ("S1 t.s." = ascending + descending).
COLUMNS = {
    "aerial": ("AERIAL_RGBI",),
    "elev": ("DEM_ELEV",),
    "spot": ("SPOT_RGBI",),
    "s2": ("SENTINEL2_TS",),
    "s1": ("SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS"),
    "hist": ("AERIAL-RLT_PAN",),
}

# The reference's default `modalities.inputs_channels` (1-based band indices).
DEFAULT_CHANNELS = {
    "AERIAL_RGBI": [4, 1, 2],
    "SPOT_RGBI": [4, 1, 2],
    "SENTINEL2_TS": list(range(1, 11)),
    "SENTINEL1-ASC_TS": [1, 2],
    "SENTINEL1-DESC_TS": [1, 2],
}


@dataclass(frozen=True)
class TableRow:
    model_id: str
    task: str
    columns: tuple[str, ...]
    para_m: float
    reference_total: int | None = None
    """Whole-model parameters (fusion included) of the reference implementation, same config."""

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(m for c in self.columns for m in COLUMNS[c])


_LC, _LPIS = "AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS"
# PARA. from the table; whole-model totals measured on IGNF/FLAIR-HUB's FLAIR_HUB_Model (HEAD 3d5693b,
# smp 0.4.0, timm 1.0.31) built with `make_config(row.inputs, [row.task])` and these input sizes.
RESULTS_TABLE: tuple[TableRow, ...] = (
    TableRow("LC-A", _LC, ("aerial",), 89.4, 90_816_843),
    TableRow("LC-B", _LC, ("aerial", "elev"), 181.4, 184_175_465),
    TableRow("LC-C", _LC, ("aerial", "elev", "spot"), 270.6, 274_814_004),
    TableRow("LC-D", _LC, ("aerial", "s2"), 93.9, 95_423_635),
    TableRow("LC-E", _LC, ("aerial", "s1"), 95.8, 97_475_464),
    TableRow("LC-F", _LC, ("aerial", "s2", "s1"), 97.7, 99_536_509),
    TableRow("LC-G", _LC, ("s2",), 0.9, 922_487),
    TableRow("LC-H", _LC, ("s1",), 1.8, 1_836_136),
    TableRow("LC-I", _LC, ("spot",), 89.2, 90_640_459),
    TableRow("LC-J", _LC, ("elev",), 89.4, 90_814_795),
    TableRow("LC-K", _LC, ("aerial", "hist"), 181.4, 184_153_961),
    TableRow("LC-L", _LC, ("aerial", "elev", "spot", "s2", "s1"), 276.4, 280_987_923),
    TableRow("LC-ALL", _LC, ("aerial", "elev", "spot", "s2", "s1", "hist"), 365.8, 371_779_294),
    TableRow("LPIS-A", _LPIS, ("aerial",), 89.4, 90_817_103),
    TableRow("LPIS-B", _LPIS, ("aerial", "spot"), 181.2, 184_001_909),
    TableRow("LPIS-C", _LPIS, ("aerial", "s2"), 93.9, 95_428_329),
    TableRow("LPIS-D", _LPIS, ("aerial", "s2", "s1"), 97.7, 99_549_551),
    TableRow("LPIS-E", _LPIS, ("aerial", "spot", "s2"), 183.1, 186_067_128),
    TableRow("LPIS-F", _LPIS, ("s2",), 0.9, 926_661),
    TableRow("LPIS-G", _LPIS, ("s1",), 1.8, 1_844_656),
    TableRow("LPIS-H", _LPIS, ("s2", "s1"), 2.8, 2_771_315),
    TableRow("LPIS-I", _LPIS, ("spot", "s2", "s1"), 97.5, 99_373_167),
    TableRow("LPIS-J", _LPIS, ("aerial", "spot", "s2", "s1"), 186.9, 190_188_350),
    TableRow("LPIS-K", _LPIS, ("spot",), 89.2, 90_640_719),
)


def load_models_yaml(path: Path = MODELS_YAML) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)["models"]


def make_config(
    inputs: Iterable[str],
    tasks: Iterable[str],
    *,
    aux: bool | Iterable[str] | None = None,
    arch: str | None = None,
    multitemp: dict[str, Any] | None = None,
    dropout: dict[str, float] | None = None,
    models: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A merged FLAIR-HUB config (model keys only) with the reference's defaults.

    `aux=None` follows the results table's rule: an auxiliary loss on every input when there
    are several, none for a single input; `aux=True/False` or a list of modalities overrides it.
    """
    inputs, tasks = list(inputs), list(tasks)
    if aux is None:
        aux = len(inputs) > 1
    aux_set = set(inputs) if aux is True else set() if aux is False else set(aux)
    models = copy.deepcopy(models if models is not None else load_models_yaml())
    if arch is not None:
        models["monotemp_model"]["arch"] = arch
    # Structure only: parameter counts do not depend on the initial weights, and a model built
    # from this config (tests, counts on the meta device) must not need ImageNet weights.
    models["monotemp_model"]["encoder_weights"] = None
    models["multitemp_model"].update(multitemp or {})
    return {
        "modalities": {
            "inputs": {m: m in inputs for m in INPUT_KEYS},
            "inputs_channels": copy.deepcopy(DEFAULT_CHANNELS),
            "aux_loss": {m: m in aux_set for m in INPUT_KEYS},
            "aux_loss_weight": 1.5,
            "modality_dropout": {m: (dropout or {}).get(m, 0) for m in INPUT_KEYS},
            "pre_processings": {"calc_elevation": True, "calc_elevation_stack_dsm": True},
        },
        "models": models,
        "labels": tasks,
        "labels_configs": {
            t: {"value_name": {c.value: c.name for c in CLASS_TABLES[t]}, "task_weight": 1} for t in tasks
        },
    }


def count_row(row: TableRow, arch: str | None = None, device: str = "meta") -> tuple[int, int]:
    """(summary count, whole-model total) of one table configuration."""
    model = build_model(make_config(row.inputs, [row.task], arch=arch), device=device)
    return model.summary_parameter_count(), model.parameter_count()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", nargs="*", help="model ids to check (default: all 24)")
    parser.add_argument("--arch", default=None, help="override models.monotemp_model.arch")
    parser.add_argument("--device", default="meta", help="'meta' (fast, no weights) or 'cpu'")
    args = parser.parse_args(argv)
    rows = [r for r in RESULTS_TABLE if not args.ids or r.model_id in args.ids]
    unknown = set(args.ids or ()) - {r.model_id for r in rows}
    if unknown:
        parser.error(f"unknown model ids: {', '.join(sorted(unknown))}")

    start = time.perf_counter()
    results = []
    for row in tqdm(rows, desc="building models", unit="model", file=sys.stderr):
        summary, total = count_row(row, args.arch, args.device)
        results.append((row, summary, total))
    elapsed = time.perf_counter() - start

    header = (f"{'model':<8} {'inputs':<30} {'summary':>12} {'M':>7} {'table M':>8} {'diff M':>7} "
              f"{'whole model':>12} {'reference':>12}  ok")
    print(header)
    print("-" * len(header))
    failures = 0
    for row, summary, total in results:
        diff = summary / 1e6 - row.para_m
        ok = abs(diff) <= TOLERANCE_M and (args.arch is not None or row.reference_total in (None, total))
        failures += not ok
        names = "+".join(c for c in row.columns)
        ref = f"{row.reference_total:,}" if row.reference_total and args.arch is None else "-"
        print(f"{row.model_id:<8} {names:<30} {summary:>12,} {summary / 1e6:>7.2f} {row.para_m:>8.1f} {diff:>+7.2f} "
              f"{total:>12,} {ref:>12}  {'yes' if ok else 'NO'}")
    print(f"\n{len(results)} configurations built on '{args.device}' in {elapsed:.1f} s; {failures} failing "
          f"(summary off by more than {TOLERANCE_M} M or total differing from the reference)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
