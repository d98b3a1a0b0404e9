"""DDP's unused parameters are asked of the model (trainer/unused_parameters.py): the dry walk of the
loss's autograd graph finds exactly the parameters a real training step leaves without a gradient."""

from pathlib import Path

import pytest
import torch
import yaml

from packer.schema import MODALITIES
from trainer.losses import CompositeLoss
from trainer.model import build_model
from trainer.model.synthetic import synthetic_batch
from trainer.train_config import load_train_config
from trainer.unused_parameters import needs_unused_parameter_search

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.mark.parametrize("over", [
    {"modalities": {"inputs": {"AERIAL_RGBI": False, "SPOT_RGBI": True, "SENTINEL1-ASC_TS": True}},
     "models": {"monotemp_model": {"arch": "resnet18-fpn", "encoder_weights": None}}},  # FPN: reads 3 of the fused stages
    {"modalities": {"inputs": {"AERIAL_RGBI": False, "SPOT_RGBI": True, "SENTINEL2_TS": True},
                    "aux_loss": {"SPOT_RGBI": True, "SENTINEL2_TS": True}}},  # aux heads (U-Net)
    {"modalities": {"inputs": {"AERIAL_RGBI": False, "SPOT_RGBI": True}}},  # one branch: fusion bypassed
    {"modalities": {"inputs": {"AERIAL_RGBI": False, "SENTINEL2_TS": True, "SENTINEL1-ASC_TS": True}}},  # series only
    {"labels": ["AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS"],
     "modalities": {"inputs": {"AERIAL_RGBI": False, "SPOT_RGBI": True, "SENTINEL1-DESC_TS": True}}},
], ids=["fpn-spot-s1", "aux-spot-s2", "spot-only", "series-only", "two-tasks"])
def test_parameters_without_gradient_are_those_a_backward_leaves_untouched(over, tmp_path):
    """The dry walk of the loss graph (eval mode, nothing written) finds exactly the parameters that a
    real training step leaves without a gradient; DDP's flag follows (or modality dropout turns it on)."""
    path = tmp_path / "over.yaml"
    path.write_text(yaml.safe_dump({"models": {"monotemp_model": {"arch": "resnet18-unet", "encoder_weights": None}}} | over))
    cfg = load_train_config([REPO / "configs" / "flair-hub", path])
    model = build_model(cfg)
    needed, derived = needs_unused_parameter_search(model, cfg)
    assert all(p.grad is None for p in model.parameters()) and model.training

    batch = synthetic_batch(model.spec, batch_size=2, lengths=[2, 2] if model.spec.multi else None)
    out = model(batch.inputs, batch.dates, batch.pad_masks, modality_dropout=False)
    size = {t: MODALITIES[t].size_px for t in model.spec.tasks}
    labels = {t: torch.zeros(2, size[t], size[t], dtype=torch.long) for t in model.spec.tasks}
    CompositeLoss(cfg)(out.tasks, out.aux, labels, check_finite=False).total.backward()
    assert derived == [n for n, p in model.named_parameters() if p.grad is None]
    assert needed == bool(derived)

    over["modalities"]["modality_dropout"] = {m: 0.3 for m in model.spec.inputs}
    path.write_text(yaml.safe_dump({"models": {"monotemp_model": {"arch": "resnet18-unet", "encoder_weights": None}}} | over))
    cfg = load_train_config([REPO / "configs" / "flair-hub", path])
    assert needs_unused_parameter_search(build_model(cfg), cfg)[0] == (len(model.spec.inputs) > 1 or bool(derived))
