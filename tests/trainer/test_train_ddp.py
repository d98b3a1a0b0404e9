"""`accelerate launch` with 2 CPU processes (gloo): ranks see disjoint data and take equal steps, and
models where some parameters never get a gradient train past step 2 (the documented demo, a
multi-modal FPN, auxiliary heads: DDP's `find_unused_parameters` is asked of the model)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(config: list[str], over: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes 2 trainer/train.py --config ...` on the CPU."""
    (tmp_path / "over.yaml").write_text(yaml.safe_dump(over))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           str(REPO / "trainer" / "train.py"), "--config", *config, str(tmp_path / "over.yaml")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "on 2 rank(s)" in proc.stdout
    return proc


def _steps(out: Path) -> int:
    return sum('"kind": "step"' in line for line in (out / "metrics.jsonl").read_text().splitlines())


QUICK = {"saving": {"enable_progress_bar": False}, "hardware": {"accelerator": "cpu", "num_workers": 0},
         "train": {"tensorboard": False, "report": False, "limit_val_batches": 1, "log_samples": True}}


def _assert_ranks_split_the_data(out: Path, steps: int) -> None:
    """Equal batch counts per rank, disjoint samples, every train sample (5) exactly once."""
    seen = {r: [line.split() for line in (out / "samples" / f"rank{r}.txt").read_text().splitlines()] for r in (0, 1)}
    assert len({batch for _, batch, _, _ in seen[0]}) == len({batch for _, batch, _, _ in seen[1]}) == steps
    valid = {r: {pid for _, _, pid, ok in rows if ok == "1"} for r, rows in seen.items()}
    assert not valid[0] & valid[1]
    assert len(valid[0] | valid[1]) == 5
    assert _steps(out) == steps
    assert (out / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("name, config, over, steps, unused", [
    # The documented command: ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2
    # trainer/train.py --config configs/demo (aerial ResNet-18/U-Net + Sentinel-2 U-TAE): 2 steps of 2x2.
    ("demo", "demo", {"hyperparams": {"num_epochs": 1}}, 2, 10),
    ("fpn", "flair-hub", {"hyperparams": {"num_epochs": 1, "batch_size": 1},
                          "modalities": {"inputs": {"AERIAL_RGBI": False, "SPOT_RGBI": True, "SENTINEL1-ASC_TS": True}},
                          "models": {"monotemp_model": {"arch": "resnet18-fpn", "encoder_weights": None}}}, 3, 12),
    ("aux", "flair-hub", {"hyperparams": {"num_epochs": 1, "batch_size": 1},
                          "modalities": {"inputs": {"AERIAL_RGBI": False, "SPOT_RGBI": True, "SENTINEL2_TS": True},
                                         "aux_loss": {"SPOT_RGBI": True, "SENTINEL2_TS": True}},
                          "models": {"monotemp_model": {"arch": "resnet18-unet", "encoder_weights": None}}}, 3, 2),
], ids=["demo", "multimodal-fpn", "aux-heads"])
def test_models_with_parameters_that_get_no_gradient(toy_shards, tmp_path, name, config, over, steps, unused):
    over = {**QUICK, **over, "paths": {"out_folder": str(tmp_path), "out_model_name": name},
            "data": {"source": str(toy_shards.out), "decode_threads": 1}}
    proc = _launch([str(REPO / "configs" / config)], over, tmp_path)
    assert f"ddp: {unused} of " in proc.stdout and "find_unused_parameters=True" in proc.stdout, proc.stdout
    _assert_ranks_split_the_data(tmp_path / name, steps)
