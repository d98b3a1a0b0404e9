"""The demo model predicts each pixel from its neighbourhood only, so zonal maps do not depend on the tile size.

A layer that normalises or pools over the whole input (smp's FPN decoder: GroupNorm; UPerNet:
pyramid pooling; U-TAE with `encoder_norm: group`) makes every prediction depend on the whole tile,
and flair-zonal's maps then change with `img_pixels_detection`. The demo model must have none: a
change of the aerial image far from a pixel (beyond the network's receptive field) leaves that
pixel's logits unchanged, and so does a different series tile size for the same pixels.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.model import build_model
from trainer.model.synthetic import synthetic_batch
from trainer.train_config import read_config_layers

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_far_away_pixels_do_not_change_a_demo_prediction() -> None:
    cfg = read_config_layers([REPO / "configs" / "demo"])
    torch.manual_seed(0)
    model = build_model(cfg, input_sizes={"AERIAL_RGBI": 1024}).eval()
    batch = synthetic_batch(model.spec, batch_size=1, lengths=[6], seed=0)
    aerial = torch.randn(1, 3, 256, 1024)
    changed = aerial.clone()
    changed[..., 640:] = torch.randn_like(changed[..., 640:])  # 576 px away from the columns checked
    with torch.no_grad():
        a = model({**batch.inputs, "AERIAL_RGBI": aerial}, batch.dates, batch.pad_masks, out_size=(256, 1024)).tasks
        b = model({**batch.inputs, "AERIAL_RGBI": changed}, batch.dates, batch.pad_masks, out_size=(256, 1024)).tasks
    for task in a:
        assert not torch.allclose(a[task][..., 640:], b[task][..., 640:])  # the change does reach the model
        torch.testing.assert_close(a[task][..., :64], b[task][..., :64], rtol=0, atol=1e-5)


def test_no_layer_of_the_demo_model_looks_at_the_whole_tile() -> None:
    cfg = read_config_layers([REPO / "configs" / "demo"])
    with torch.device("meta"):
        model = build_model(cfg, device="meta")
    whole_tile = (torch.nn.GroupNorm, torch.nn.InstanceNorm2d, torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveMaxPool2d)
    found = [name for name, m in model.named_modules() if isinstance(m, whole_tile)
             and ".temporal_encoder." not in f".{name}."]  # the L-TAE's norms run per pixel
    assert not found, found[:5]
