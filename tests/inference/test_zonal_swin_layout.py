"""flair-zonal loads Swin checkpoints whatever the tile size: bias tables follow the window layout.

A Swin/UPerNet model is built at its training size, saved, and loaded by flair-zonal (the real
`default_model_loader` inside `run_zonal`) at tile sizes that change the window of at least one
stage, for each branch whose training size is small enough for that: aerial (512 px), SPOT
(64 px) and the historical aerial (256 px). The Swin is shrunk (embed 16, one block per stage,
32-channel decoder) so that forwards stay fast; its window layout is Swin-B's (window 12, patch 4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from rasterio.transform import from_origin

from inference.model_io import load_inference_model
from inference.zonal import run_zonal
from inference.zonal_config import validate_zonal_config
from packer.schema import CLASS_TABLES
from tools.param_table import make_config
from trainer.model import CheckpointMismatch, build_model, save_model
from trainer.model import monotemp
from trainer.model.window_layout import BIAS_TABLE

COSIA = "AERIAL_LABEL-COSIA"
SWIN = "swin_base_patch4_window12_384-upernet"
TINY_SWIN = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4))

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# branch -> (training size, zonal tile sizes that change the layout, native resolution in m)
BRANCHES = {
    "AERIAL_RGBI": (512, (256, 128), 0.2),
    "SPOT_RGBI": (64, (128, 96), 1.6),
    "AERIAL-RLT_PAN": (256, (192, 128), 0.4),
}
CHANNELS = {"AERIAL_RGBI": [4, 1, 2], "SPOT_RGBI": [4, 1, 2], "AERIAL-RLT_PAN": [1]}
BANDS = {"AERIAL_RGBI": (4, np.uint8), "SPOT_RGBI": (4, np.uint16), "AERIAL-RLT_PAN": (1, np.uint8)}


@pytest.fixture()
def tiny_swin(monkeypatch):
    """Swin-B's window layout at a fraction of its width and depth (timm keyword overrides)."""
    real = monotemp.create_smp_model

    def small(arch, encoder, in_channels, classes, img_size, **extra):
        if encoder.startswith("swin"):
            extra = {**TINY_SWIN, "decoder_pyramid_channels": 32, "decoder_segmentation_channels": 16, **extra}
        return real(arch, encoder, in_channels, classes, img_size, **extra)

    monotemp._decoder_template.cache_clear()
    monkeypatch.setattr(monotemp, "create_smp_model", small)
    yield
    monotemp._decoder_template.cache_clear()


def _config(branch: str) -> dict[str, Any]:
    cfg = make_config([branch], [COSIA], arch=SWIN)
    cfg["models"]["monotemp_model"]["encoder_weights"] = None
    return cfg


def _trained(tmp_path: Path, branch: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """A model built (and 'trained') at the branch's dataset size, saved as our checkpoint."""
    torch.manual_seed(0)
    size = BRANCHES[branch][0]
    model = build_model(_config(branch), input_sizes={branch: size})
    with torch.no_grad():  # move every table away from its initial values, so resizing is visible
        for name, p in model.named_parameters():
            if name.endswith(BIAS_TABLE):
                p.normal_()
    weights, _ = save_model(model, tmp_path / "ckpt" / "model")
    return weights, {k: v.clone() for k, v in model.state_dict().items()}


def _zonal_cfg(tmp_path: Path, branch: str, weights: Path, tile: int, **over: Any) -> dict[str, Any]:
    n, dtype = BANDS[branch]
    res = BRANCHES[branch][2]
    side = tile + tile // 2  # two tiles each way
    arr = np.random.default_rng(1).integers(0, 200, (n, side, side)).astype(dtype)
    path = tmp_path / f"{branch}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=n, dtype=arr.dtype,
                       crs="EPSG:2154", transform=from_origin(700_000.0, 6_600_000.0, res, res)) as dst:
        dst.write(arr)
    cfg = dict(output_path=str(tmp_path / f"out{tile}"), output_name="area", model_weights=str(weights),
               img_pixels_detection=tile, margin=tile // 8, output_px_meters=res, batch_size=2,
               monotemp_arch=SWIN,
               modalities={"inputs": {branch: True},
                           branch: {"input_img_path": str(path), "channels": CHANNELS[branch],
                                    "normalization": {"type": "scaling"}}},
               tasks=[{"name": COSIA, "active": True, "class_names": {c.value: c.name for c in CLASS_TABLES[COSIA]}}])
    cfg.update(over)
    return validate_zonal_config(cfg, base_dir=tmp_path)


@pytest.mark.parametrize("branch", list(BRANCHES))
def test_zonal_loads_a_swin_checkpoint_at_tile_sizes_that_change_the_windows(tmp_path, tiny_swin, branch) -> None:
    weights, saved = _trained(tmp_path, branch)
    for tile in BRANCHES[branch][1]:
        model, _ = load_inference_model(weights, input_sizes={branch: tile})
        state = model.state_dict()
        resized = [k for k in saved if tuple(saved[k].shape) != tuple(state[k].shape)]
        assert resized and all(k.endswith(BIAS_TABLE) for k in resized), resized
        for key in set(saved) - set(resized):
            assert torch.equal(state[key], saved[key]), key  # strict and untouched everywhere else
        cfg = _zonal_cfg(tmp_path, branch, weights, tile)
        report = run_zonal(cfg, progress=False)  # flair-zonal's own loader, then a forward per tile
        assert report.tiles_done == report.tiles_total == 4 and not report.failed
        with rasterio.open(report.outputs[0]) as src:
            assert src.read(1).max() < 19


@pytest.mark.parametrize("branch", list(BRANCHES))
def test_same_layout_loads_bit_equal_weights(tmp_path, tiny_swin, branch) -> None:
    weights, saved = _trained(tmp_path, branch)
    model, _ = load_inference_model(weights, input_sizes={branch: BRANCHES[branch][0]})
    state = model.state_dict()
    assert set(state) == set(saved)
    for key, value in saved.items():
        assert torch.equal(state[key], value), key


def _reference_interpolate_bias_table(ckpt: torch.Tensor, rows: int) -> torch.Tensor:
    """The reference's `flair_hub/models/checkpoint.py::interpolate_bias_table`, step by step."""
    old_len, heads = ckpt.shape
    s_old, s_new = int(old_len ** 0.5), int(rows ** 0.5)
    bias = ckpt.reshape(1, s_old, s_old, heads).permute(0, 3, 1, 2)
    bias = F.interpolate(bias, size=(s_new, s_new), mode="bicubic", align_corners=False)
    return bias.permute(0, 2, 3, 1).reshape(rows, heads)


def test_resized_tables_equal_the_reference_zonal_interpolation(tmp_path, tiny_swin) -> None:
    weights, saved = _trained(tmp_path, "SPOT_RGBI")
    model, _ = load_inference_model(weights, input_sizes={"SPOT_RGBI": 256})  # the default 2048 px aerial tile
    state = model.state_dict()
    checked = 0
    for key, value in saved.items():
        if key.endswith(BIAS_TABLE) and value.shape != state[key].shape:
            assert torch.equal(state[key], _reference_interpolate_bias_table(value, state[key].shape[0])), key
            checked += 1
    assert checked >= 3  # windows 8 -> 12, 4 -> 12 and 2 -> 8 at 64 -> 256 px


def test_reference_checkpoint_for_zonal_keys_and_other_mismatches_stay_errors(tmp_path, tiny_swin) -> None:
    """A reference Lightning `.ckpt` (SPOT, trained at 64 px) at zonal tiles; a wrong channel count is refused."""
    _, saved = _trained(tmp_path, "SPOT_RGBI")
    ckpt = tmp_path / "reference.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in saved.items()}, "epoch": 3}, ckpt)
    cfg = _zonal_cfg(tmp_path, "SPOT_RGBI", ckpt, 128)  # model from the zonal keys, as the reference
    report = run_zonal(cfg, progress=False)
    assert report.tiles_done == 4 and not report.failed
    wrong = _zonal_cfg(tmp_path, "SPOT_RGBI", ckpt, 128, output_name="wrong")
    wrong["modalities"]["SPOT_RGBI"]["channels"] = [4, 1]
    with pytest.raises(CheckpointMismatch, match=r"patch_embed.*shape mismatch|shape mismatch"):
        run_zonal(wrong, progress=False)


@pytest.mark.parametrize("branch, trained, tiles", [
    ("SPOT_RGBI", 64, (256,)), ("AERIAL-RLT_PAN", 256, (1024,)), ("AERIAL_RGBI", 512, (256,)),
])
def test_full_size_swin_b_layouts_fit_on_the_meta_device(branch, trained, tiles) -> None:
    """Swin-B itself (no shrinking), shapes only: every table fitted, nothing else differs."""
    from trainer.model.weights import check_state_dict
    from trainer.model.window_layout import fit_window_layout

    cfg = _config(branch)
    saved = build_model(cfg, input_sizes={branch: trained}, device="meta").state_dict()
    for tile in tiles:
        model = build_model(cfg, input_sizes={branch: tile}, device="meta")
        state, resized = fit_window_layout(saved, model.state_dict())
        check_state_dict(model, state, f"{branch} {trained} px -> {tile} px")  # raises on any other mismatch
        if branch == "SPOT_RGBI" and tile == 256:
            assert len(resized) == 22  # the count: (225, 8) -> (529, 8) and the others
            key = "encoders.SPOT_RGBI.seg_model.model.layers_1.blocks.0.attn.relative_position_bias_table"
            assert tuple(saved[key].shape) == (225, 8) and tuple(state[key].shape) == (529, 8)
