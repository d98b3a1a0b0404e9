"""Pretrained encoders as the reference gets them: smp/timm loading from a local cache or file, never the network.

The reference builds its encoders with smp's default `encoder_weights="imagenet"`: timm encoders
(Swin-B) take timm's Hub weights through timm's own loader (first conv adapted by
`adapt_input_conv`), smp encoders take smp's URL weights then `set_in_channels(pretrained=True)`.
These tests put small random weights where those libraries look (a Hugging Face cache, a torch hub
cache) or in a file, and check the encoder holds what the library's own loading gives.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file

from tools.param_table import make_config
from trainer.config import ConfigError
from trainer.model import build_model, load_model, save_model
from trainer.model import pretrained as pretrained_mod
from trainer.model.monotemp import EncoderWeightsMismatch, adapt_first_conv
from trainer.model.pretrained import PretrainedUnavailable, check_available, imagenet_source
from trainer.train import main as train_main
from trainer.train_config import load_train_config, read_config_layers

REPO = Path(__file__).resolve().parents[2]
COSIA = "AERIAL_LABEL-COSIA"

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture()
def empty_caches(tmp_path, monkeypatch):
    """Empty Hugging Face and torch hub caches (the machine's own are not looked at)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch_hub"))
    yield tmp_path
    torch.hub.set_dir(before)


def _hf_cache_put(cache: Path, repo: str, filename: str, state: dict) -> Path:
    """A file in the Hugging Face cache layout (`models--org--name/snapshots/<rev>/<file>`, `refs/main`)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    path = folder / "snapshots" / revision / filename
    path.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _config(inputs, weights, mode="random", arch="resnet18-unet", channels=None):
    cfg = make_config(inputs, [COSIA], arch=arch)
    cfg["models"]["monotemp_model"]["encoder_weights"] = str(weights)
    cfg["models"]["monotemp_model"]["new_channels_init_mode"] = mode
    if channels:
        cfg["modalities"]["inputs_channels"]["AERIAL_RGBI"] = channels
    return cfg


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A resnet18 state dict with torchvision/timm key names (random values, classifier included)."""
    state = {k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "resnet18.safetensors"
    save_file(state, str(path))
    return path, state


def test_a_file_loads_as_smp_loads_imagenet_for_four_channels(resnet18_file):
    """`random` (the reference's value, never read by it): smp's own adaptation, filters cycled x 3/4."""
    path, state = resnet18_file
    model = build_model(_config(["AERIAL_RGBI"], path, channels=[1, 2, 3, 4]), input_sizes={"AERIAL_RGBI": 64})
    encoder = model.encoders["AERIAL_RGBI"].seg_model
    conv, pretrained = encoder.conv1.weight.detach(), state["conv1.weight"]
    expected = torch.stack([pretrained[:, i % 3] for i in range(4)], dim=1) * (3 / 4)
    torch.testing.assert_close(conv, expected, rtol=0, atol=0)
    assert torch.equal(encoder.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])


@pytest.mark.parametrize("mode, source", [("copy_first", 0), ("copy_second", 1), ("copy_third", 2)])
def test_copy_modes_keep_rgb_and_copy_one_filter(resnet18_file, mode, source):
    path, state = resnet18_file
    model = build_model(_config(["AERIAL_RGBI"], path, mode, channels=[1, 2, 3, 4]), input_sizes={"AERIAL_RGBI": 64})
    conv, pretrained = model.encoders["AERIAL_RGBI"].seg_model.conv1.weight.detach(), state["conv1.weight"]
    assert torch.equal(conv[:, :3], pretrained) and torch.equal(conv[:, 3], pretrained[:, source])


def test_timm_encoder_single_channel_gets_timms_sum_of_rgb(tmp_path):
    state = {k: v.contiguous() for k, v in timm.create_model("test_convnext").state_dict().items()}
    path = tmp_path / "test_convnext.safetensors"
    save_file(state, str(path))
    model = build_model(_config(["AERIAL-RLT_PAN"], path, arch="test_convnext-upernet"), input_sizes={"AERIAL-RLT_PAN": 32})
    encoder_state = model.encoders["AERIAL-RLT_PAN"].seg_model.state_dict()
    torch.testing.assert_close(encoder_state["model.stem_0.weight"], state["stem.0.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(encoder_state["model.stages_1.blocks.0.mlp.fc1.weight"], state["stages.1.blocks.0.mlp.fc1.weight"])


def test_imagenet_from_the_local_hugging_face_cache(empty_caches):
    source = imagenet_source("test_convnext")
    assert source.repo == "timm/test_convnext.r160_in1k"
    state = {k: v.contiguous() for k, v in timm.create_model("test_convnext").state_dict().items()}
    _hf_cache_put(empty_caches / "hf", source.repo, "model.safetensors", state)
    model = build_model(_config(["AERIAL_RGBI"], "imagenet", arch="test_convnext-upernet"), input_sizes={"AERIAL_RGBI": 32})
    encoder_state = model.encoders["AERIAL_RGBI"].seg_model.state_dict()
    assert torch.equal(encoder_state["model.stem_0.weight"], state["stem.0.weight"])  # 3 channels: as stored
    assert torch.equal(encoder_state["model.stages_2.blocks.0.conv_dw.weight"], state["stages.2.blocks.0.conv_dw.weight"])


def test_imagenet_from_the_torch_hub_cache_for_smp_encoders(empty_caches):
    import segmentation_models_pytorch as smp

    source = imagenet_source("mobilenet_v2")
    assert source.url == "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"
    torch.manual_seed(1)
    encoder = smp.encoders.get_encoder("mobilenet_v2", in_channels=3, depth=5, weights=None)
    state = {**encoder.state_dict(), "classifier.1.weight": torch.zeros(1000, 1280), "classifier.1.bias": torch.zeros(1000)}
    target = empty_caches / "torch_hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    torch.manual_seed(2)
    model = build_model(_config(["AERIAL_RGBI"], "imagenet", arch="mobilenet_v2-fpn"), input_sizes={"AERIAL_RGBI": 64})
    loaded = model.encoders["AERIAL_RGBI"].seg_model.state_dict()
    for key, value in encoder.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_unavailable_weights_name_the_key_the_weights_and_three_ways_out(empty_caches):
    with pytest.raises(PretrainedUnavailable) as info:
        build_model(_config(["AERIAL_RGBI"], "imagenet", arch="test_convnext-upernet"), input_sizes={"AERIAL_RGBI": 32})
    msg = str(info.value)
    assert msg.startswith("models.monotemp_model.encoder_weights: imagenet wants")
    assert "hf://timm/test_convnext.r160_in1k" in msg and "\n" not in msg
    assert "huggingface-cli download timm/test_convnext.r160_in1k" in msg
    assert "path/to/weights.safetensors" in msg and "encoder_weights: null" in msg


def test_reference_configs_default_to_imagenet_and_flair_train_fails_at_start(empty_caches, tmp_path, capsys):
    models = yaml.safe_load((REPO / "configs" / "flair-hub" / "config_models.yaml").read_text())["models"]
    assert models["monotemp_model"]["encoder_weights"] == "imagenet"
    for seed in sorted((REPO / "configs" / "seed").glob("*.yaml")):
        assert read_config_layers([seed])["models"]["monotemp_model"]["encoder_weights"] == "imagenet", seed.name
    assert read_config_layers([REPO / "configs" / "demo"])["models"]["monotemp_model"]["encoder_weights"] is None
    cfg = load_train_config([REPO / "configs" / "seed" / "LC-A.yaml"], [f"data.source={tmp_path / 'no-shards'}"])
    with pytest.raises(PretrainedUnavailable, match=r"swin_base_patch4_window12_384\.ms_in22k_ft_in1k"):
        check_available(cfg)
    rc = train_main(["--config", str(REPO / "configs" / "seed" / "LC-A.yaml"), "--set", f"data.source={tmp_path / 'no-shards'}",
                     f"paths.out_folder={tmp_path / 'runs'}", "hardware.accelerator=cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("flair-train: error: models.monotemp_model.encoder_weights: imagenet wants the reference's "
                             "swin_base_patch4_window12_384 weights hf://timm/swin_base_patch4_window12_384.ms_in22k_ft_in1k")


def test_checkpoints_load_without_fetching_the_initial_weights(empty_caches, tmp_path):
    cfg = _config(["AERIAL_RGBI"], "imagenet", arch="test_convnext-upernet")
    model = build_model(cfg, input_sizes={"AERIAL_RGBI": 32}, pretrained=False)
    path, _ = save_model(model, tmp_path / "m")
    loaded = load_model(path)  # the config says imagenet, the weights come from the checkpoint
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_wrong_or_missing_files_are_reported(resnet18_file, tmp_path):
    with pytest.raises(ConfigError, match="encoder_weights: no such file"):
        build_model(_config(["AERIAL_RGBI"], tmp_path / "nope.safetensors"), input_sizes={"AERIAL_RGBI": 64})
    _, state = resnet18_file
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith("layer4")}, str(partial))
    with pytest.raises(EncoderWeightsMismatch, match="layer4"):
        build_model(_config(["AERIAL_RGBI"], partial), input_sizes={"AERIAL_RGBI": 64})
    convnext = {k: v.contiguous() for k, v in timm.create_model("test_convnext").state_dict().items() if "stages.3" not in k}
    cut = tmp_path / "cut.safetensors"
    save_file(convnext, str(cut))
    with pytest.raises(EncoderWeightsMismatch, match="stages.3"):
        build_model(_config(["AERIAL_RGBI"], cut, arch="test_convnext-upernet"), input_sizes={"AERIAL_RGBI": 32})


def test_adapt_first_conv_refuses_fewer_channels():
    with pytest.raises(ValueError):
        adapt_first_conv(torch.randn(8, 3, 3, 3), torch.zeros(8, 2, 3, 3), "copy_first")
    assert pretrained_mod.KEY == "models.monotemp_model.encoder_weights"
