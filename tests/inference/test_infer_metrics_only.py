"""flair-infer --metrics-only, the reference's `tasks` keys, and every checkpoint flair-train writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml

from inference.cli import infer_main
from inference.predict import InferOptions, run_infer
from inference.standin import CopyBandModel
from trainer.train_checkpoint import Progress, atomic_torch_save, build_checkpoint
from trainer.model import build_model, save_model
from trainer.optim import Schedule, build_optimizer
from trainer.train_config import dump_config, read_config_layers

REPO = Path(__file__).resolve().parents[2]
COSIA = "AERIAL_LABEL-COSIA"
TEXT_FILES = (f"{COSIA}_metrics.json", f"{COSIA}_per_class.csv", f"{COSIA}_confusion.csv", "summary.json")

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _config(**tasks) -> dict:
    raw = read_config_layers([REPO / "configs" / "flair-hub"])
    raw["models"]["monotemp_model"] = {"arch": "mobilenet_v2-fpn", "new_channels_init_mode": "random",
                                       "encoder_weights": None}
    raw["tasks"].update(tasks)
    return raw


def _write_config(path: Path, **tasks) -> Path:
    path.write_text(yaml.safe_dump(_config(**tasks), sort_keys=False))
    return path


@pytest.fixture(scope="module")
def predicted(toy_shards, tmp_path_factory):
    """A predicting run (copy-band stand-in) with its metrics, on the toy test split."""
    root = tmp_path_factory.mktemp("metrics_only")
    cfg = _write_config(root / "config.yaml")
    out = root / "run"
    run_infer(InferOptions(checkpoint=None, data=str(toy_shards.out), out=str(out), config=[str(cfg)], device="cpu",
                           batch_size=3, progress=False, print_table=False),
              model=CopyBandModel("AERIAL_RGBI", 0, {COSIA: 19}))
    return root, cfg, out


def _same_metric_files(a: Path, b: Path) -> None:
    for name in TEXT_FILES:
        assert (a / "metrics" / name).read_bytes() == (b / "metrics" / name).read_bytes(), name
    assert (b / "metrics" / f"{COSIA}_confusion.png").is_file() and (b / "metrics" / f"{COSIA}_iou.png").is_file()


def test_metrics_only_reproduces_the_predicting_runs_metrics(predicted, toy_shards) -> None:
    root, cfg, run = predicted
    other = root / "rescored"
    assert infer_main(["--metrics-only", "--pred", str(run), "--data", str(toy_shards.out), "--split", "test",
                       "--config", str(cfg), "--out", str(other), "--no-progress"]) == 0
    _same_metric_files(run, other)
    # Without --config or --checkpoint: the FLAIR-HUB defaults and the task folders found (same here).
    defaults = root / "defaults"
    assert infer_main(["--metrics-only", "--pred", str(run), "--data", str(toy_shards.out), "--out", str(defaults),
                       "--no-progress"]) == 0
    _same_metric_files(run, defaults)


def test_the_config_key_metrics_only_is_honoured(predicted, toy_shards, tmp_path) -> None:
    root, _, run = predicted
    cfg = _write_config(tmp_path / "metrics_only.yaml", predict=False, metrics_only=True)
    copy = tmp_path / "copy"
    (copy / "predictions").mkdir(parents=True)
    (copy / "predictions" / COSIA).symlink_to(run / "predictions" / COSIA)
    assert infer_main(["--config", str(cfg), "--data", str(toy_shards.out), "--out", str(copy), "--no-progress"]) == 0
    _same_metric_files(run, copy)


def test_a_missing_prediction_is_named(predicted, toy_shards, tmp_path, capsys) -> None:
    root, cfg, run = predicted
    partial = tmp_path / "partial" / "predictions" / COSIA
    partial.mkdir(parents=True)
    files = sorted((run / "predictions" / COSIA).glob("PRED_*.tif"))
    for f in files[1:]:
        (partial / f.name).symlink_to(f)
    assert infer_main(["--metrics-only", "--pred", str(tmp_path / "partial"), "--data", str(toy_shards.out),
                       "--config", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no prediction for" in err and files[0].name in err


def test_predict_false_without_metrics_only_is_refused(toy_shards, tmp_path, capsys) -> None:
    cfg = _write_config(tmp_path / "c.yaml", predict=False, metrics_only=False)
    assert infer_main(["--checkpoint", "x.safetensors", "--config", str(cfg), "--data", str(toy_shards.out),
                       "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "tasks.predict: False and tasks.metrics_only: False" in err and "--metrics-only" in err


def test_write_files_and_georeferencing_output_are_honoured(toy_shards, tmp_path) -> None:
    model = CopyBandModel("AERIAL_RGBI", 0, {COSIA: 19})
    no_files = _write_config(tmp_path / "nofiles.yaml", write_files=False)
    res = run_infer(InferOptions(checkpoint=None, data=str(toy_shards.out), out=str(tmp_path / "a"), config=[str(no_files)],
                                 device="cpu", limit=2, progress=False, print_table=False), model=model)
    assert res.files == 0 and not (tmp_path / "a" / "predictions").exists() and (tmp_path / "a" / "metrics").is_dir()
    plain = _write_config(tmp_path / "plain.yaml", georeferencing_output=False)
    res = run_infer(InferOptions(checkpoint=None, data=str(toy_shards.out), out=str(tmp_path / "b"), config=[str(plain)],
                                 device="cpu", limit=2, progress=False, print_table=False), model=model)
    assert res.files == 2
    for path in (tmp_path / "b" / "predictions" / COSIA).glob("*.tif"):
        with rasterio.open(path) as src:
            assert src.crs is None and src.transform.is_identity
            assert src.tags()["CLASS_0"] == "building"


def test_every_checkpoint_flair_train_writes_is_accepted(toy_shards, tmp_path) -> None:
    """best.ckpt / last.ckpt (full and weights-only) predict as best_model.safetensors, without --config."""
    raw = _config()
    raw["modalities"]["normalization"]["AERIAL_RGBI_means"] = [100.0, 101.0, 102.0]  # must come from the ckpt
    torch.manual_seed(0)
    model = build_model(raw).eval()
    config_yaml = dump_config(raw)
    ckpts = tmp_path / "run" / "checkpoints"
    best_model, _ = save_model(model, ckpts / "best_model", train_config_yaml=config_yaml)
    optimizer = build_optimizer(raw, model.parameters())
    schedule = Schedule(raw, optimizer, total_steps=10)
    per_rank = [{"rng": {"torch": torch.get_rng_state()}, "loader": {"position": 0}}]
    atomic_torch_save(build_checkpoint(weights_only=False, model_state=model.state_dict(), progress=Progress(),
                                       config_yaml=config_yaml, optimizer=optimizer, schedule=schedule,
                                       per_rank=per_rank), ckpts / "best.ckpt")
    atomic_torch_save(build_checkpoint(weights_only=True, model_state=model.state_dict(), progress=Progress(),
                                       config_yaml=config_yaml), ckpts / "last.ckpt")
    outs = {}
    for path in (best_model, ckpts / "best.ckpt", ckpts / "last.ckpt"):
        out = tmp_path / path.name
        assert infer_main(["--checkpoint", str(path), "--data", str(toy_shards.out), "--out", str(out), "--device", "cpu",
                           "--limit", "2", "--batch-size", "2", "--no-progress"]) == 0
        outs[path.name] = out
    first = sorted((outs["best_model.safetensors"] / "predictions" / COSIA).glob("*.tif"))
    assert len(first) == 2
    for name in ("best.ckpt", "last.ckpt"):
        for p in first:
            with rasterio.open(p) as a, rasterio.open(outs[name] / "predictions" / COSIA / p.name) as b:
                np.testing.assert_array_equal(a.read(), b.read())
        assert (outs[name] / "metrics" / "summary.json").read_bytes() == \
            (outs["best_model.safetensors"] / "metrics" / "summary.json").read_bytes()
