"""End-to-end training on toy shards, one CPU process: learning, checkpoints, exact resume, errors.

Model: SPOT-only (64 px input, ResNet-18/U-Net, land cover) so a step is cheap on CPU while the
semantics (512 px labels, CoSIA weights, the reference preprocessing) are the real ones.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from trainer.losses import NonFiniteLossError
from trainer.train import main, reduce_loss_and_check, run
from trainer.train_config import load_train_config
from trainer.train_checkpoint import Progress
from trainer.model import build_model

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def spot_config(shards: Path, out: Path, name: str, **extra: dict) -> list:
    """Config layers for a small SPOT-only run (validated on the test split: 6 patches, other domains)."""
    over = {
        "paths": {"out_folder": str(out), "out_model_name": name},
        "hyperparams": {"num_epochs": 3, "batch_size": 2, "learning_rate": 0.002},
        "hardware": {"accelerator": "cpu", "num_workers": 0},
        "data": {"source": str(shards), "val_split": "test", "decode_threads": 2},
        "saving": {"enable_progress_bar": False},
        "modalities": {"inputs": {"AERIAL_RGBI": False, "SPOT_RGBI": True}},
        "models": {"monotemp_model": {"arch": "resnet18-unet", "encoder_weights": None}},  # random init, no download
        "train": {"tensorboard": False},
    }
    for section, values in extra.items():
        over[section] = {**over.get(section, {}), **values} if isinstance(values, dict) else values
    path = out / f"{name}.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(over))
    return [REPO / "configs" / "flair-hub", path]


@pytest.fixture(scope="module")
def runs(toy_shards, tmp_path_factory):
    """One uninterrupted run, and the same run stopped mid-epoch 2 then resumed."""
    out = tmp_path_factory.mktemp("train_runs")
    # The first model built in a process draws more random numbers than later ones (trainer.model
    # caches a decoder template built on the meta device), so initial weights would differ between
    # the first and the next runs of this process; build one first so every run below starts alike.
    build_model(load_train_config(spot_config(toy_shards.out, out, "warm")), device="meta")
    full = run(load_train_config(spot_config(toy_shards.out, out, "full")))
    part = run(load_train_config(spot_config(toy_shards.out, out, "part", train={"stop_after_steps": 4, "tensorboard": False})))
    resumed = run(load_train_config(spot_config(
        toy_shards.out, out, "part",
        tasks={"train_tasks": {"resume_training_from_ckpt": True, "init_weights_only_from_ckpt": False}},
        paths={"out_folder": str(out), "out_model_name": "part",
               "ckpt_model_path": str(out / "part" / "checkpoints" / "last.ckpt")})))
    return {"out": out, "full": full, "part": part, "resumed": resumed, "shards": toy_shards.out}


def test_training_reduces_the_loss_and_beats_chance(runs):
    full = runs["full"]
    losses = full.step_losses
    assert len(losses) == 9  # 5 train samples, batch 2, pad -> 3 steps x 3 epochs
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3
    # Chance levels on the validation pixels of the 15 evaluated classes: uniform guessing has
    # OA 1/15; the best constant prediction (the majority class c) has IoU share_c for c and 0
    # elsewhere, so mIoU share_c / 15.
    cm = np.load(full.out_dir / "report" / "AERIAL_LABEL-COSIA_confusion.npy", allow_pickle=False)
    gt = cm[:15].sum(axis=1)
    constant_miou = gt.max() / gt.sum() / 15
    assert full.best_metrics["val_oa"] > 2 / 15
    assert full.best_metrics["val_miou"] > 1.5 * constant_miou, (full.best_metrics["val_miou"], constant_miou)


def test_outputs_report_and_checkpoints(runs):
    out = runs["full"].out_dir
    for name in ("report.md", "metrics.json", "config_used.yaml", "AERIAL_LABEL-COSIA_confusion.png",
                 "AERIAL_LABEL-COSIA_iou.png"):
        assert (out / "report" / name).stat().st_size > 0, name
    doc = json.loads((out / "report" / "metrics.json").read_text())
    assert len(doc["tasks"]["AERIAL_LABEL-COSIA"]["evaluated"]) == 15
    used = yaml.safe_load((out / "report" / "config_used.yaml").read_text())
    assert used["modalities"]["inputs"]["SPOT_RGBI"] is True and used["train"]["tensorboard"] is False
    for name in ("best.ckpt", "last.ckpt", "best_model.safetensors", "best_model.json"):
        assert (out / "checkpoints" / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "step"] == list(range(1, 10))
    assert all(0 <= r["data_wait_share"] <= 1 and r["samples_per_s"] > 0 for r in rows if r["kind"] == "step")


def test_resume_mid_epoch_reproduces_the_uninterrupted_run(runs):
    full, part, resumed = runs["full"], runs["part"], runs["resumed"]
    assert part.step_losses == full.step_losses[:4]
    assert resumed.step_losses == full.step_losses[4:]  # bit for bit
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history[1:]]
    assert resumed.best_metrics["val_miou"] == full.best_metrics["val_miou"]


def test_resume_errors_are_clear(runs, tmp_path, capsys):
    shards, out = runs["shards"], tmp_path
    corrupt = tmp_path / "corrupt.ckpt"
    good = runs["out"] / "full" / "checkpoints" / "last.ckpt"
    corrupt.write_bytes(good.read_bytes()[:1000])
    resume = {"train_tasks": {"resume_training_from_ckpt": True, "init_weights_only_from_ckpt": False}}
    layers = spot_config(shards, out, "bad", tasks=resume, paths={"out_folder": str(out), "ckpt_model_path": str(corrupt)})
    assert main(["--config", *map(str, layers)]) == 2
    assert "corrupt.ckpt: unreadable or truncated" in capsys.readouterr().err

    # A checkpoint of another model (SPOT) resumed into an S2-only config.
    layers = spot_config(shards, out, "other", tasks=resume, paths={"out_folder": str(out), "ckpt_model_path": str(good)},
                         modalities={"inputs": {"AERIAL_RGBI": False, "SPOT_RGBI": False, "SENTINEL2_TS": True}})
    assert main(["--config", *map(str, layers)]) == 2
    assert "incompatible with the model built from this config" in capsys.readouterr().err


def test_bad_inputs_exit_with_one_clear_message(runs, tmp_path, capsys):
    layers = spot_config(tmp_path / "no-such-shards", tmp_path, "x")
    assert main(["--config", *map(str, layers)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flair-train: error:") and "no-such-shards" in err
    assert main(["--config", *map(str, layers), "--set", "train.mixed_precision=fp8"]) == 2
    assert "train.mixed_precision" in capsys.readouterr().err


def test_nan_loss_and_out_of_memory_are_reported(monkeypatch, capsys):
    class OneProcess:
        num_processes = 1

    with pytest.raises(NonFiniteLossError, match="training loss is nan at epoch 2, step 8"):
        reduce_loss_and_check(OneProcess(), torch.tensor(float("nan")), Progress(epoch=2, step=7))

    def oom(cfg):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr("trainer.train.run", oom)
    assert main(["--config", str(REPO / "configs" / "demo")]) == 3
    assert "hyperparams.batch_size" in capsys.readouterr().err


def test_gradient_accumulation_and_step_intervals(toy_shards, tmp_path):
    """3 batches, accumulation 2 -> 2 optimizer steps (the last window is one batch); validation
    after step 1 (mid-epoch) and at the end of the epoch; a checkpoint after every step.
    Also two tasks and an auxiliary head, so the multi-task paths run end to end."""
    layers = spot_config(toy_shards.out, tmp_path, "accum", hyperparams={"num_epochs": 1},
                         labels=["AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS"],
                         modalities={"inputs": {"AERIAL_RGBI": False, "SPOT_RGBI": True}, "aux_loss": {"SPOT_RGBI": True}},
                         train={"gradient_accumulation_steps": 2, "val_every_n_steps": 1, "checkpoint_every_n_steps": 1,
                                "limit_val_batches": 1, "tensorboard": False, "report": False})
    result = run(load_train_config(layers))
    assert len(result.step_losses) == 2
    assert [(h["epoch"], h["step"]) for h in result.history] == [(0, 1), (1, 2)]
    assert "train_loss" in result.history[1] and "train_loss" not in result.history[0]
    ckpt = torch.load(result.out_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["progress"]["step"] == 2 and ckpt["progress"]["epoch"] == 1 and ckpt["kind"] == "full"
    assert any(k.startswith("aux_decoders.SPOT_RGBI__ALL_LABEL-LPIS") for k in ckpt["model"])
    last = result.history[-1]
    assert {"val_miou_COSIA", "val_miou_LPIS"} <= set(last)
    assert last["val_miou"] == pytest.approx((last["val_miou_COSIA"] + last["val_miou_LPIS"]) / 2)


def test_init_weights_only_from_our_checkpoints(runs):
    from trainer.train_checkpoint import init_weights

    cfg = load_train_config(spot_config(runs["shards"], runs["out"], "init"))
    best = torch.load(runs["out"] / "full" / "checkpoints" / "best.ckpt", weights_only=True)["model"]
    for path in ("best.ckpt", "best_model.safetensors"):
        model = build_model(cfg)
        init_weights(model, str(runs["out"] / "full" / "checkpoints" / path))
        assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items()), path


def test_resume_after_a_crash_logs_each_step_once(toy_shards, tmp_path):
    """The run went on past its last checkpoint (step 1) to step 2, then died: resuming from the
    checkpoint replays step 2, and metrics.jsonl / samples/rank0.txt hold each step and each
    sample of the epoch once. Also with a checkpoint written before the logs' lengths were
    recorded in it (the logs are then cut by content)."""
    import shutil

    resume = {"train_tasks": {"resume_training_from_ckpt": True, "init_weights_only_from_ckpt": False}}

    def config(stop=None, ckpt=None, name="crash"):
        return load_train_config(spot_config(
            toy_shards.out, tmp_path, name, hyperparams={"num_epochs": 1},
            train={"stop_after_steps": stop, "log_samples": True, "limit_val_batches": 1, "tensorboard": False,
                   "report": False},
            **({"tasks": resume, "paths": {"out_folder": str(tmp_path), "out_model_name": name,
                                           "ckpt_model_path": str(ckpt)}} if ckpt else {})))

    def logs(name):
        folder = tmp_path / name
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return [(r["kind"], r["step"]) for r in rows], (folder / "samples" / "rank0.txt").read_text().splitlines()

    run(config(stop=1))
    step1 = tmp_path / "step1.ckpt"
    shutil.copy(tmp_path / "crash" / "checkpoints" / "last.ckpt", step1)
    run(config(stop=2, ckpt=step1))  # step 2 logged; only the step-1 checkpoint survives the crash
    assert [s for k, s in logs("crash")[0] if k == "step"] == [1, 2]
    shutil.copytree(tmp_path / "crash", tmp_path / "old")
    old_ckpt = torch.load(step1, weights_only=True)
    for state in old_ckpt["per_rank"]:
        state.pop("logs", None)  # as a checkpoint of an earlier version has none
    torch.save(old_ckpt, tmp_path / "old.ckpt")

    run(config(ckpt=step1))
    run(config(ckpt=tmp_path / "old.ckpt", name="old"))
    for name in ("crash", "old"):
        rows, samples = logs(name)
        assert rows == [("step", 1), ("step", 2), ("step", 3), ("eval", 3)], name
        batches = [tuple(line.split()[:2]) for line in samples]
        assert batches == sorted(batches) and len(batches) == 6, (name, samples)  # 3 batches of 2, once each
        valid = [line.split()[2] for line in samples if line.endswith(" 1")]
        assert len(valid) == len(set(valid)) == 5, (name, samples)  # every train sample exactly once


def test_workers_persist_over_the_epochs_and_end_with_the_run(runs, toy_shards, tmp_path):
    """hardware.num_workers > 0: the same step losses as without workers (same batches), and no
    worker process left once the run has returned."""
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    result = run(load_train_config(spot_config(toy_shards.out, tmp_path, "workers",
                                               hardware={"accelerator": "cpu", "num_workers": 2})))
    assert result.step_losses == pytest.approx(runs["full"].step_losses, rel=1e-5)
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and p.status() != "zombie"]
    assert not left, f"worker processes left after the run: {left}"
