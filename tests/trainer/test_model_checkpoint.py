"""Checkpoints: the reference's key layout loads strictly (.ckpt / .pth / .safetensors); ours round-trip."""

from __future__ import annotations

import collections
import json

import pytest
import torch
from safetensors.torch import save_file

from tools.param_table import make_config
from trainer.model import CheckpointMismatch, build_model, load_model, load_reference_weights, save_model
from trainer.model.synthetic import synthetic_batch

TINY_UTAE = {"encoder_widths": [8, 8, 16], "decoder_widths": [8, 8, 16], "out_conv": [8, 19], "n_head": 4, "d_model": 16}
INPUTS = ["AERIAL_RGBI", "SENTINEL2_TS"]
TASK = "AERIAL_LABEL-COSIA"
SIZES = {"AERIAL_RGBI": 32, "SENTINEL2_TS": 4}

# Keys written from the reference code (flair_model.py, multitemp_model.py, monotemp_model.py and
# smp 0.4.0's UPerNet), independent of the timm backbone's internals.
REFERENCE_KEYS_SMALL = [
    "fusion_handler.conv_f.0.weight",
    "fusion_handler.conv_f.3.bias",
    f"main_decoders.{TASK}.seg_model.segmentation_head.0.weight",
    f"main_decoders.{TASK}.seg_model.decoder.psp.blocks.0.1.0.weight",
    f"main_decoders.{TASK}.seg_model.decoder.fpn_bottleneck.1.running_var",
    f"aux_decoders.AERIAL_RGBI__{TASK}.seg_model.decoder.fpn_stages.0.skip_conv.0.weight",
    f"aux_decoders.SENTINEL2_TS__{TASK}.weight",
    "encoders.SENTINEL2_TS.in_conv.conv.conv.0.weight",
    "encoders.SENTINEL2_TS.in_conv.conv.conv.4.bias",
    "encoders.SENTINEL2_TS.down_blocks.1.down.conv.0.weight",
    "encoders.SENTINEL2_TS.down_blocks.0.conv2.conv.1.weight",
    "encoders.SENTINEL2_TS.up_blocks.0.skip_conv.1.running_mean",
    "encoders.SENTINEL2_TS.up_blocks.2.up.0.weight",
    "encoders.SENTINEL2_TS.up_blocks.1.conv1.conv.0.weight",
    "encoders.SENTINEL2_TS.temporal_encoder.inconv.weight",
    "encoders.SENTINEL2_TS.temporal_encoder.in_norm.weight",
    "encoders.SENTINEL2_TS.temporal_encoder.out_norm.bias",
    "encoders.SENTINEL2_TS.temporal_encoder.mlp.1.num_batches_tracked",
    "encoders.SENTINEL2_TS.temporal_encoder.attention_heads.Q",
    "encoders.SENTINEL2_TS.temporal_encoder.attention_heads.fc1_k.weight",
    "encoders.SENTINEL2_TS.out_conv.conv.conv.0.weight",
    "encoders.SENTINEL2_TS.out_conv.conv.conv.1.running_mean",
]

# Swin-Base/UPerNet LC-F (aerial + S2 + S1 asc/desc), default config: names and shapes as the
# reference builds them (timm's features-only Swin inside smp's TimmUniversalEncoder).
REFERENCE_KEYS_LC_F = {
    "encoders.AERIAL_RGBI.seg_model.model.patch_embed.proj.weight": (128, 3, 4, 4),
    "encoders.AERIAL_RGBI.seg_model.model.layers_3.blocks.1.attn.relative_position_bias_table": (529, 32),
    "encoders.SENTINEL2_TS.in_conv.conv.conv.0.weight": (64, 10, 3, 3),
    "encoders.SENTINEL1-DESC_TS.temporal_encoder.attention_heads.Q": (16, 4),
    "encoders.SENTINEL1-ASC_TS.out_conv.conv.conv.3.weight": (19, 32, 3, 3),
    # U-TAE widths stretched to Swin's 4 stages: [64, 64, 128, 128]; its maps come deepest first,
    # so the finest Swin stage is fused with 128-channel U-TAE maps and the deepest with 64.
    "fusion_handler.conv_f.0.weight": (128, 128 + 3 * 128, 1, 1),
    "fusion_handler.conv_f.3.weight": (1024, 1024 + 3 * 64, 1, 1),
    f"main_decoders.{TASK}.seg_model.segmentation_head.0.weight": (19, 64, 1, 1),
    f"main_decoders.{TASK}.seg_model.decoder.fpn_stages.4.skip_conv.0.weight": (256, 1, 1, 1),
    f"aux_decoders.AERIAL_RGBI__{TASK}.seg_model.decoder.psp.out_conv.0.weight": (256, 2048, 1, 1),
    f"aux_decoders.SENTINEL1-DESC_TS__{TASK}.weight": (19, 19, 1, 1),
}


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def config():
    return make_config(INPUTS, [TASK], arch="test_convnext-upernet", multitemp=TINY_UTAE, aux=True)


@pytest.fixture(scope="module")
def trained(config):
    """A model whose weights and BatchNorm statistics differ from a fresh build's."""
    model = build_model(config, input_sizes=SIZES)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        batch = synthetic_batch(model.spec, seed=3)
        model.train()
        model(batch.inputs, batch.dates, batch.pad_masks, out_size=32, modality_dropout=False)
    return model.eval()


def _logits(model, seed=4):
    batch = synthetic_batch(model.spec, batch_size=2, lengths=[3, 2], seed=seed)
    with torch.no_grad():
        out = model(batch.inputs, batch.dates, batch.pad_masks, out_size=32)
    return out.tasks[TASK], out.aux[TASK]


def _assert_same_outputs(a, b):
    ta, aa = _logits(a)
    tb, ab = _logits(b)
    assert torch.equal(ta, tb)
    assert aa.keys() == ab.keys() and all(torch.equal(aa[k], ab[k]) for k in aa)


def test_hand_written_reference_keys_exist(trained):
    keys = set(trained.state_dict())
    assert [k for k in REFERENCE_KEYS_SMALL if k not in keys] == []


def test_swin_base_lc_f_has_the_reference_keys_and_shapes():
    model = build_model(make_config(["AERIAL_RGBI", "SENTINEL2_TS", "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS"], [TASK]),
                        device="meta")
    state = model.state_dict()
    got = {k: tuple(state[k].shape) if k in state else None for k in REFERENCE_KEYS_LC_F}
    assert got == REFERENCE_KEYS_LC_F


def _lightning_state(model):
    state = collections.OrderedDict((f"model.{k}", v.clone()) for k, v in model.state_dict().items())
    state[f"criterion.{TASK}.weight"] = torch.ones(19)  # the loss's class weights, saved by Lightning
    state[f"criterion.aux_AERIAL_RGBI_{TASK}.weight"] = torch.ones(19)
    return state


@pytest.mark.parametrize("layout", ["lightning_ckpt", "plain_pth", "safetensors", "safetensors_prefixed"])
def test_reference_layouts_load_strictly(trained, config, tmp_path, layout):
    if layout == "lightning_ckpt":
        path = tmp_path / "epoch=3-step=100.ckpt"
        torch.save({"epoch": 3, "global_step": 100, "pytorch-lightning_version": "2.4.0",
                    "state_dict": _lightning_state(trained), "optimizer_states": [], "lr_schedulers": []}, path)
    elif layout == "plain_pth":
        path = tmp_path / "model.pth"
        torch.save(trained.state_dict(), path)
    elif layout == "safetensors":
        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    else:
        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in _lightning_state(trained).items()}, str(path))
    fresh = build_model(config, input_sizes=SIZES).eval()
    load_reference_weights(fresh, path)
    _assert_same_outputs(trained, fresh)


def test_mismatched_checkpoint_names_every_problem_and_loads_nothing(trained, config, tmp_path):
    state = trained.state_dict()
    state.pop("encoders.SENTINEL2_TS.temporal_encoder.attention_heads.Q")
    state["encoders.SENTINEL2_TS.temporal_encoder.extra.weight"] = torch.zeros(1)
    state["fusion_handler.conv_f.0.bias"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    fresh = build_model(config, input_sizes=SIZES)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointMismatch) as err:
        load_reference_weights(fresh, path)
    message = str(err.value)
    assert "missing" in message and "attention_heads.Q" in message
    assert "unexpected" in message and "temporal_encoder.extra.weight" in message
    assert "shape mismatch" in message and "fusion_handler.conv_f.0.bias" in message
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


class Payload:
    """Stands for arbitrary code a pickle could run when loaded."""


def test_pickled_objects_are_refused(trained, tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": trained.state_dict(), "hook": Payload()}, path)
    with pytest.raises(ValueError, match="weights-only"):
        load_reference_weights(trained, path)


def test_save_load_round_trip(trained, tmp_path):
    weights, config_json = save_model(trained, tmp_path / "run" / "best")
    assert weights.name == "best.safetensors" and config_json.name == "best.json"
    assert not [p for p in weights.parent.iterdir() if p.name.endswith(".partial")]
    document = json.loads(config_json.read_text())
    assert document["config"]["modalities"]["inputs"]["SENTINEL2_TS"] is True
    assert "paths" not in document["config"]  # only what builds the model
    loaded = load_model(weights).eval()
    _assert_same_outputs(trained, loaded)
    config_json.unlink()  # the config is also inside the safetensors metadata
    _assert_same_outputs(trained, load_model(weights).eval())


def test_initial_weights_depend_on_the_seed_alone():
    """A cold and a warm decoder-template cache give the same initial weights for the same seed
    (smp's resnet encoders draw random numbers even when built on the meta device)."""
    from trainer.model import monotemp

    cfg = make_config(["AERIAL_RGBI"], [TASK], arch="resnet18-fpn", aux=False)
    monotemp._decoder_template.cache_clear()
    torch.manual_seed(123)
    cold = build_model(cfg, input_sizes={"AERIAL_RGBI": 64}).state_dict()
    torch.manual_seed(123)
    warm = build_model(cfg, input_sizes={"AERIAL_RGBI": 64}).state_dict()
    assert cold.keys() == warm.keys()
    for key in cold:
        assert torch.equal(cold[key], warm[key]), key
