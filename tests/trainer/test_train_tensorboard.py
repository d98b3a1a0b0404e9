"""TensorBoard at each validation: scalars, plus the pictures (fixed patches, confusion matrix, IoU).

A one-epoch SPOT-only run (cheap on CPU) with two tasks and a mid-epoch validation, so the images
are logged twice; the event file is read back with TensorBoard's own reader and the PNGs decoded.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from trainer.train import run
from trainer.train_config import load_train_config

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _layers(shards: Path, out: Path, **train: object) -> list:
    over = {
        "paths": {"out_folder": str(out), "out_model_name": "tb"},
        "hyperparams": {"num_epochs": 1, "batch_size": 2, "learning_rate": 0.002},
        "hardware": {"accelerator": "cpu", "num_workers": 0},
        "data": {"source": str(shards), "val_split": "test", "decode_threads": 2},
        "saving": {"enable_progress_bar": False},
        "labels": ["AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS"],
        "modalities": {"inputs": {"AERIAL_RGBI": False, "SPOT_RGBI": True}},
        "models": {"monotemp_model": {"arch": "resnet18-unet", "encoder_weights": None}},  # random init, no download
        "train": {"tensorboard": True, "report": False, "val_every_n_steps": 1, "limit_val_batches": 1,
                  "tensorboard_images": 3, **train},
    }
    path = out / "tb.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(over))
    return [REPO / "configs" / "flair-hub", path]


def _images(event_dir: Path) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    acc = EventAccumulator(str(event_dir), size_guidance={IMAGES: 0})
    acc.Reload()
    return {tag: acc.Images(tag) for tag in acc.Tags()["images"]}


def test_validation_pictures_reach_tensorboard(toy_shards, tmp_path):
    result = run(load_train_config(_layers(toy_shards.out, tmp_path)))
    evals = [h["step"] for h in result.history]
    images = _images(result.out_dir / "tensorboard")
    expected = {"val_samples", "val_confusion/COSIA", "val_confusion/LPIS", "val_iou/COSIA", "val_iou/LPIS"}
    assert expected <= set(images), sorted(images)
    for tag in expected:
        assert [e.step for e in images[tag]] == evals, tag  # one picture per validation
        pic = np.asarray(Image.open(io.BytesIO(images[tag][-1].encoded_image_string)).convert("RGB"))
        assert pic.shape[0] > 200 and pic.shape[1] > 200, tag
        assert pic.std() > 10, f"{tag} is blank"
    # The sample grid: 3 fixed patches (rows), input + label + prediction per task (5 columns) + legends.
    grid = images["val_samples"][-1]
    assert grid.width > grid.height


def test_sample_grid_uses_the_official_colours(toy_shards):
    """The label panels are drawn with packer.schema's colours (one home for colours)."""
    from packer.schema import COSIA_CLASSES
    from trainer.data.loader import StreamingLoader
    from trainer.tb_images import EvalImages, figure_to_rgb

    cfg = load_train_config(_layers(toy_shards.out, Path(toy_shards.out).parent / "tb_cfg"))
    loader = StreamingLoader.from_config(cfg, "test", shuffle=False, augment=False)
    images = EvalImages(loader, cfg, n=2)
    assert [r["patch_id"] for r in images.raw] == loader.selection.patch_ids[:2]
    labels = {t: images.batch[t].numpy() for t in images.tasks}
    pic = figure_to_rgb(images.samples_figure(labels, step=0))  # prediction = label: colours must be present
    colours = {tuple(c.rgb) for c in COSIA_CLASSES if (labels["AERIAL_LABEL-COSIA"] == c.value).mean() > 0.05}
    flat = {tuple(p) for p in pic.reshape(-1, 3)[:: 7]}
    assert colours and colours <= flat
