"""`train.reference_semantics: true` against the reference's own formulas on fixed logits.

The oracle is written the way the reference computes (`tasks_module.py`, `module_setup.py`,
`flair_model.py`): `nn.CrossEntropyLoss(weight=w)` per task, the auxiliary losses never added,
torchmetrics' `MeanMetric` for `val_loss`, `MulticlassJaccardIndex(average="weighted")` for
`val_miou_<T>` (mean over tasks: `val_miou`), `average=None` + `nan_to_num` for `val_iou_*`,
per-class unweighted cross-entropy averaged over batches for `val_loss_class_*`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torchmetrics.aggregation import MeanMetric
from torchmetrics.classification import MulticlassJaccardIndex

from tools.param_table import make_config
from trainer import reference_semantics as ref
from trainer.config import ConfigError
from trainer.losses import CompositeLoss
from trainer.model import build_model
from trainer.model.flair_uperfuse import reference_dropout_draw
from trainer.model.ltae import MaskedGroupNorm
from trainer.model.synthetic import synthetic_batch
from trainer.train import run
from trainer.train_config import load_train_config

REPO = Path(__file__).resolve().parents[2]
COSIA, LPIS = "AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS"
N_BATCHES, BATCH, SIDE = 4, 2, 12

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _cfg() -> dict:
    names = {COSIA: {i: f"c{i}" for i in range(19)}, LPIS: {i: f"l{i}" for i in range(23)}}
    return {
        "labels": [COSIA, LPIS],
        "modalities": {"inputs": {"AERIAL_RGBI": True, "SENTINEL2_TS": True},
                       "aux_loss": {"AERIAL_RGBI": True, "SENTINEL2_TS": True}, "aux_loss_weight": 1.5,
                       "modality_dropout": {"AERIAL_RGBI": 0, "SENTINEL2_TS": 0, "DEM_ELEV": 0.3}},
        "labels_configs": {
            COSIA: {"task_weight": 1, "value_name": names[COSIA],
                    "value_weights": {"default": 1, "default_exceptions": {15: 0, 16: 0, 17: 0, 18: 0}}},
            LPIS: {"task_weight": 0.5, "value_name": names[LPIS],
                   "value_weights": {"default": 2, "default_exceptions": {22: 0.5}}},
        },
    }


def _batches(seed: int = 0) -> list[dict]:
    """Fixed logits (main and auxiliary) and targets; some classes absent, some pixels of weight-0 classes."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(N_BATCHES):
        item = {"valid": torch.ones(BATCH, dtype=torch.bool)}
        logits, aux = {}, {}
        for task, n, top in ((COSIA, 19, 17), (LPIS, 23, 12)):
            logits[task] = torch.randn(BATCH, n, SIDE, SIDE, generator=g) * 2
            aux[task] = {m: torch.randn(BATCH, n, SIDE, SIDE, generator=g) for m in ("AERIAL_RGBI", "SENTINEL2_TS")}
            item[task] = torch.randint(0, top, (BATCH, SIDE, SIDE), generator=g)
        out.append({"batch": item, "logits": logits, "aux": aux})
    return out


def reference_step_loss(cfg: dict, logits: dict, batch: dict) -> torch.Tensor:
    """`SegmentationTask.step`: sum of task_weight * (CE + aux), aux = 0 (its lookup never matches)."""
    total = 0
    for task in cfg["labels"]:
        conf = cfg["labels_configs"][task]
        w = torch.FloatTensor([conf["value_weights"]["default"]] * len(conf["value_name"]))
        for k, v in (conf["value_weights"].get("default_exceptions") or {}).items():
            w[k] = v
        main = nn.CrossEntropyLoss(weight=w)(logits[task], batch[task])
        total = total + conf.get("task_weight", 1.0) * (main + torch.tensor(0.0))
    return total


def reference_validation(cfg: dict, data: list[dict]) -> dict[str, float]:
    """`validation_step` x N + `on_validation_epoch_end`, with torchmetrics as the reference uses it."""
    val_loss = MeanMetric()
    weighted = {t: MulticlassJaccardIndex(num_classes=len(cfg["labels_configs"][t]["value_name"]), average="weighted")
                for t in cfg["labels"]}
    per_class = {t: MulticlassJaccardIndex(num_classes=len(cfg["labels_configs"][t]["value_name"]), average=None)
                 for t in cfg["labels"]}
    class_loss = {t: [] for t in cfg["labels"]}
    for d in data:
        loss = reference_step_loss(cfg, d["logits"], d["batch"])
        val_loss.update(loss)
        for t in cfg["labels"]:
            preds = torch.argmax(torch.softmax(d["logits"][t], dim=1), dim=1)
            targets = d["batch"][t].to(torch.int32)
            weighted[t].update(preds, targets)
            per_class[t].update(preds, targets)
            ce = torch.nn.functional.cross_entropy(d["logits"][t], d["batch"][t], reduction="none")
            avg = torch.zeros(d["logits"][t].shape[1])
            for c in range(d["logits"][t].shape[1]):
                mask = d["batch"][t] == c
                avg[c] = ce[mask].mean() if mask.sum() > 0 else 0.0
            class_loss[t].append(avg)
    out = {"val_loss": float(val_loss.compute())}
    total = sum(weighted[t].compute().item() for t in cfg["labels"])
    out["val_miou"] = total / len(cfg["labels"])
    for t in cfg["labels"]:
        s = t.split("-")[-1]
        out[f"val_miou_{s}"] = float(weighted[t].compute())
        names = cfg["labels_configs"][t]["value_name"]
        for c, iou in enumerate(torch.nan_to_num(per_class[t].compute(), nan=0.0)):
            out[f"val_iou_{s}_{c}_{names.get(c, f'class_{c}')}"] = iou.item()
        for c, v in enumerate(torch.stack(class_loss[t]).mean(dim=0)):  # Lightning's on_epoch mean, equal batches
            out[f"val_loss_class_{s}_{c}_{names.get(c, f'class_{c}')}"] = v.item()
    return out


def test_training_step_loss_equals_the_reference_formula() -> None:
    cfg = _cfg()
    ours_ref, ours = CompositeLoss(cfg, reference=True), CompositeLoss(cfg)
    for d in _batches():
        want = reference_step_loss(cfg, d["logits"], d["batch"])
        got = ours_ref(d["logits"], d["aux"], d["batch"]).total
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
        # Ours adds the auxiliary terms the reference's configs describe: a different number.
        assert float(ours(d["logits"], d["aux"], d["batch"]).total) > float(want) + 0.1


def test_all_weight_zero_batch_is_nan_like_the_reference() -> None:
    cfg = _cfg()
    d = _batches()[0]
    batch = {**d["batch"], COSIA: torch.full((BATCH, SIDE, SIDE), 16)}  # weight 0 everywhere
    assert torch.isnan(reference_step_loss(cfg, d["logits"], batch))
    assert torch.isnan(CompositeLoss(cfg, reference=True)(d["logits"], d["aux"], batch, check_finite=False).total)
    assert torch.isfinite(CompositeLoss(cfg)(d["logits"], d["aux"], batch).total)


def test_validation_metrics_names_and_values_equal_the_reference() -> None:
    cfg = _cfg()
    data = _batches()
    loss_fn = CompositeLoss(cfg, reference=True)
    val = ref.Validation(cfg, "cpu")
    train = ref.TrainMetrics(cfg, "cpu")
    for d in data:
        val.update(loss_fn(d["logits"], d["aux"], d["batch"]).total, d["logits"], d["batch"])
        train.update(d["logits"], d["batch"])
    val.reduce(None)
    got, want = val.scalars(), reference_validation(cfg, data)
    assert set(got) == set(want)  # exactly the reference's names
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    train_scalars = train.epoch_scalars(None)
    assert train_scalars == pytest.approx({"train_miou_COSIA": want["val_miou_COSIA"], "train_miou_LPIS": want["val_miou_LPIS"]})
    # Our default names mean something else: val_miou is the 15-class mIoU there.
    metrics, _ = val.metrics()
    assert metrics[COSIA]["wiou"] == pytest.approx(want["val_miou_COSIA"]) and metrics[COSIA]["miou"] != pytest.approx(want["val_miou_COSIA"])


def test_modality_dropout_draw_is_the_references() -> None:
    keys = ["AERIAL_RGBI", "SPOT_RGBI", "SENTINEL2_TS"]
    for seed in range(20):
        random.seed(seed)
        torch.manual_seed(seed)
        ours = reference_dropout_draw(keys)
        random.seed(seed)
        torch.manual_seed(seed)
        # flair_model.py: modalities_dropout_dict = {key: random.uniform(0, 1) ...}; torch.rand(1).item() < p
        probabilities = {k: random.uniform(0, 1) for k in keys}
        theirs = {k for k in keys if torch.rand(1).item() < probabilities[k]}
        assert ours == theirs
    # On when any configured value is > 0, even for a modality that is not an input.
    assert ref.dropout_on(_cfg()) and not ref.dropout_on({"modalities": {"modality_dropout": {"AERIAL_RGBI": 0}}})


def test_padded_dates_enter_the_ltae_norm_under_reference_semantics() -> None:
    norm = MaskedGroupNorm(4, 16)
    x = torch.randn(6, 16, 5)
    mask = torch.zeros(6, 5, dtype=torch.bool)
    mask[:, 3:] = True
    x[:, :, 3:] = 0  # padded dates hold pad_value
    plain = nn.GroupNorm(4, 16)
    plain.load_state_dict(norm.state_dict())
    assert not torch.allclose(norm(x, mask), plain(x))
    norm.include_padding = True
    torch.testing.assert_close(norm(x, mask), plain(x), rtol=0, atol=0)

    cfg = make_config(["SENTINEL2_TS", "SENTINEL1-ASC_TS"], [COSIA], multitemp={
        "encoder_widths": [8, 8, 16], "decoder_widths": [8, 8, 16], "out_conv": [8, 19], "n_head": 4, "d_model": 16})
    model = build_model(cfg, input_sizes={"SENTINEL2_TS": 4, "SENTINEL1-ASC_TS": 4}).eval()
    model.use_reference_semantics(dropout_on=False)
    assert all(m.include_padding for m in model.modules() if isinstance(m, MaskedGroupNorm))
    batch = synthetic_batch(model.spec, batch_size=2, lengths=[5, 2], seed=1)
    with torch.no_grad():
        together = model(batch.inputs, batch.dates, batch.pad_masks, out_size=8).tasks[COSIA][1]
        alone_inputs = {k: v[1:2, :2] if v.dim() == 5 else v[1:2] for k, v in batch.inputs.items()}
        alone = model(alone_inputs, {k: v[1:2, :2] for k, v in batch.dates.items()},
                      {k: v[1:2, :2] for k, v in batch.pad_masks.items()}, out_size=8).tasks[COSIA][0]
    assert not torch.allclose(together, alone, atol=1e-5)  # the reference's batch dependence


def test_config_switch_monitors_and_aux_weight_mapping(tmp_path) -> None:
    base = [REPO / "configs" / "flair-hub"]
    cfg = load_train_config(base, ["train.reference_semantics=true", "saving.ckpt_monitor=val_iou_COSIA_0_building"])
    assert cfg["train"]["reference_semantics"] is True
    with pytest.raises(ConfigError, match="saving.ckpt_monitor: unknown metric 'val_wiou'"):
        load_train_config(base, ["train.reference_semantics=true", "saving.ckpt_monitor=val_wiou"])
    prepared = ref.prepare_config(load_train_config(base, ["train.reference_semantics=true",
                                                           "hyperparams.scheduler=cycle_then_plateau",
                                                           "hyperparams.plateau_patience=3"]))
    assert prepared["data"]["uneven"] == "drop" and prepared["hyperparams"]["plateau_patience"] == 10
    weights = load_train_config(base, ["modalities.aux_loss_weight={AERIAL_RGBI: 2.0, SENTINEL2_TS: 0.5}",
                                       "modalities.inputs.SENTINEL2_TS=true", "modalities.aux_loss.AERIAL_RGBI=true",
                                       "modalities.aux_loss.SENTINEL2_TS=true"])
    assert CompositeLoss(weights).aux_weight == {"AERIAL_RGBI": 2.0, "SENTINEL2_TS": 0.5}
    with pytest.raises(ConfigError, match="modalities.aux_loss_weight.AERIAL: unknown key"):
        load_train_config(base, ["modalities.aux_loss_weight={AERIAL: 2.0}"])


def test_a_training_run_logs_the_references_names_and_drops_the_last_batch(toy_shards, tmp_path) -> None:
    over = {
        "paths": {"out_folder": str(tmp_path), "out_model_name": "ref"},
        "hyperparams": {"num_epochs": 1, "batch_size": 2, "learning_rate": 0.001},
        "hardware": {"accelerator": "cpu", "num_workers": 0},
        "data": {"source": str(toy_shards.out), "val_split": "test", "decode_threads": 1},
        "saving": {"enable_progress_bar": False, "ckpt_monitor": "val_miou"},
        "modalities": {"inputs": {"AERIAL_RGBI": False, "SPOT_RGBI": True}},
        "models": {"monotemp_model": {"arch": "resnet18-unet", "encoder_weights": None}},
        "train": {"tensorboard": False, "report": False, "reference_semantics": True},
    }
    path = tmp_path / "over.yaml"
    path.write_text(yaml.safe_dump(over))
    cfg = load_train_config([REPO / "configs" / "flair-hub", path])
    result = run(cfg)
    rows = [json.loads(line) for line in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "step"]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert len(steps) == 5 // 2  # 5 training samples in batches of 2: the last one dropped
    names = set(evals[0]) - {"kind", "epoch", "step"}
    assert names == set(ref.monitor_names(cfg))  # every reference metric, nothing else
    assert result.best_value == pytest.approx(evals[0]["val_miou"])
    assert 0 <= evals[0]["val_miou"] <= 1 and np.isfinite(evals[0]["val_loss"])
