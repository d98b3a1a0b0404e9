"""Optional pretrained encoder weights from a local file, with `new_channels_init_mode`."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from tools.param_table import make_config
from trainer.model import build_model
from trainer.model.monotemp import adapt_first_conv


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A timm resnet18 checkpoint (random values; the classifier keys are ignored by the encoder)."""
    state = {k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "resnet18.safetensors"
    save_file(state, str(path))
    return path, state


def _config(inputs, weights, mode="random", arch="resnet18-unet", channels=None):
    cfg = make_config(inputs, ["AERIAL_LABEL-COSIA"], arch=arch)
    cfg["models"]["monotemp_model"]["encoder_weights"] = str(weights)
    cfg["models"]["monotemp_model"]["new_channels_init_mode"] = mode
    if channels:
        cfg["modalities"]["inputs_channels"]["AERIAL_RGBI"] = channels
    return cfg


@pytest.mark.parametrize("mode, source", [("copy_first", 0), ("copy_second", 1), ("copy_third", 2), ("random", None)])
def test_extra_channels_follow_new_channels_init_mode(resnet18_file, mode, source):
    path, state = resnet18_file
    model = build_model(_config(["AERIAL_RGBI"], path, mode, channels=[1, 2, 3, 4]), input_sizes={"AERIAL_RGBI": 64})
    encoder = model.encoders["AERIAL_RGBI"].seg_model
    conv = encoder.conv1.weight.detach()
    pretrained = state["conv1.weight"]
    assert conv.shape[1] == 4
    assert torch.equal(conv[:, :3], pretrained)
    if source is None:
        assert not any(torch.equal(conv[:, 3], pretrained[:, c]) for c in range(3))
    else:
        assert torch.equal(conv[:, 3], pretrained[:, source])
    assert torch.equal(encoder.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])


def test_timm_feature_encoder_and_single_channel_input(tmp_path):
    """`tu-` encoders use timm's flattened feature names; one input channel gets the RGB mean."""
    state = {k: v.contiguous() for k, v in timm.create_model("test_convnext").state_dict().items()}
    path = tmp_path / "test_convnext.safetensors"
    save_file(state, str(path))
    model = build_model(_config(["AERIAL-RLT_PAN"], path, arch="test_convnext-upernet"),
                        input_sizes={"AERIAL-RLT_PAN": 32})
    encoder_state = model.encoders["AERIAL-RLT_PAN"].seg_model.state_dict()
    stem = encoder_state["model.stem_0.weight"]
    torch.testing.assert_close(stem, state["stem.0.weight"].mean(dim=1, keepdim=True))
    torch.testing.assert_close(encoder_state["model.stages_1.blocks.0.mlp.fc1.weight"],
                               state["stages.1.blocks.0.mlp.fc1.weight"])


def test_missing_or_incompatible_weights_are_reported(resnet18_file, tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder_weights"):
        build_model(_config(["AERIAL_RGBI"], tmp_path / "nope.safetensors"), input_sizes={"AERIAL_RGBI": 64})
    _, state = resnet18_file
    partial = {k: v for k, v in state.items() if not k.startswith("layer4")}
    path = tmp_path / "partial.safetensors"
    save_file(partial, str(path))
    with pytest.raises(KeyError, match="layer4"):
        build_model(_config(["AERIAL_RGBI"], path), input_sizes={"AERIAL_RGBI": 64})


def test_adapt_first_conv_fewer_channels_keeps_the_first():
    pretrained = torch.randn(8, 3, 3, 3)
    two = adapt_first_conv(pretrained, torch.zeros(8, 2, 3, 3), "random")
    assert torch.equal(two, pretrained[:, :2])
