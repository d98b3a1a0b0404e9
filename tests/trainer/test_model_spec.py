"""Config reading for the model: derived values follow the reference, bad keys are named."""

from __future__ import annotations

import copy

import pytest

from tools.param_table import make_config
from trainer.model import ConfigError, ModelSpec, build_model
from trainer.model.spec import stretched_widths, strip_dummy_stages

LC = "AERIAL_LABEL-COSIA"
LPIS = "ALL_LABEL-LPIS"


def test_channels_sizes_and_aux_from_the_config():
    cfg = make_config(["AERIAL_RGBI", "AERIAL-RLT_PAN", "DEM_ELEV", "SPOT_RGBI", "SENTINEL1-ASC_TS"], [LC],
                      aux=["DEM_ELEV", "SENTINEL1-ASC_TS", "SENTINEL2_TS"])
    spec = ModelSpec.from_config(cfg)
    assert spec.mono == ("AERIAL_RGBI", "AERIAL-RLT_PAN", "DEM_ELEV", "SPOT_RGBI")
    assert spec.multi == ("SENTINEL1-ASC_TS",)
    assert spec.in_channels == {"AERIAL_RGBI": 3, "AERIAL-RLT_PAN": 1, "DEM_ELEV": 2, "SPOT_RGBI": 3,
                                "SENTINEL1-ASC_TS": 2}
    assert spec.input_sizes == {"AERIAL_RGBI": 512, "AERIAL-RLT_PAN": 256, "DEM_ELEV": 512, "SPOT_RGBI": 64,
                                "SENTINEL1-ASC_TS": 10}
    assert spec.aux == ("DEM_ELEV", "SENTINEL1-ASC_TS")  # S2 has aux on but is not an input


@pytest.mark.parametrize("calc, stack, channels", [(True, True, 2), (True, False, 1), (False, False, 2)])
def test_elevation_channels(calc, stack, channels):
    cfg = make_config(["DEM_ELEV"], [LC])
    cfg["modalities"]["pre_processings"] = {"calc_elevation": calc, "calc_elevation_stack_dsm": stack}
    assert ModelSpec.from_config(cfg).in_channels["DEM_ELEV"] == channels


def test_utae_widths_follow_the_mono_encoder_and_head_gets_all_classes():
    spec = ModelSpec.from_config(make_config(["AERIAL_RGBI", "SENTINEL2_TS"], [LC, LPIS]))
    swin = spec.with_utae([3, 0, 128, 256, 512, 1024])
    assert swin.utae.encoder_widths == swin.utae.decoder_widths == (64, 64, 128, 128)
    assert swin.utae.out_conv == (32, 19, 42)  # 19 + 23 classes appended (reference rule)
    resnet = spec.with_utae([3, 64, 64, 128, 256, 512])
    assert len(resnet.utae.encoder_widths) == 6
    alone = ModelSpec.from_config(make_config(["SENTINEL2_TS"], [LC])).with_utae(None)
    assert alone.utae.encoder_widths == (64, 64, 64, 128) and alone.utae.decoder_widths == (32, 32, 64, 128)
    assert alone.utae.out_conv == (32, 19)


def test_width_helpers():
    assert strip_dummy_stages([3, 0, 96, 192]) == [96, 192]
    assert strip_dummy_stages([3, 64, 128]) == [3, 64, 128]
    assert stretched_widths([64, 64, 64, 128], [1, 2, 3, 4]) == [64, 64, 128, 128]


def test_build_does_not_modify_the_config():
    cfg = make_config(["AERIAL_RGBI", "SENTINEL2_TS"], [LPIS])
    before = copy.deepcopy(cfg)
    build_model(cfg, device="meta")
    assert cfg == before


def _broken(path, value, inputs=("AERIAL_RGBI", "SENTINEL2_TS")):
    cfg = make_config(list(inputs), [LC])
    node = cfg
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return cfg


@pytest.mark.parametrize(
    "path, value, named",
    [
        ("models.monotemp_model.arch", "swin_base_patch4_window12_384", "models.monotemp_model.arch"),
        ("models.monotemp_model.arch", KeyError, "models.monotemp_model.arch"),
        ("models.monotemp_model.new_channels_init_mode", "copy_fourth", "new_channels_init_mode"),
        ("models.multitemp_model.agg_mode", "max", "models.multitemp_model.agg_mode"),
        ("models.multitemp_model.n_head", 0, "models.multitemp_model.n_head"),
        ("models.multitemp_model.d_model", 250, "models.multitemp_model.d_model"),
        ("models.multitemp_model.decoder_widths", [32, 32, 64, 64], "decoder_widths"),
        ("models.multitemp_model.pad_value", KeyError, "models.multitemp_model.pad_value"),
        ("modalities.inputs.AERIAL_RGBI", "yes", "modalities.inputs.AERIAL_RGBI"),
        ("modalities.inputs.SENTINEL3_TS", True, "modalities.inputs.SENTINEL3_TS"),
        ("modalities.inputs_channels.SENTINEL2_TS", [1, 11], "modalities.inputs_channels.SENTINEL2_TS[1]"),
        ("modalities.inputs_channels.AERIAL_RGBI", [], "modalities.inputs_channels.AERIAL_RGBI"),
        ("modalities.modality_dropout.AERIAL_RGBI", 1.5, "modalities.modality_dropout.AERIAL_RGBI"),
        ("labels", ["AERIAL_LABEL-COSIA", "LABEL-X"], "labels"),
        ("labels_configs.AERIAL_LABEL-COSIA.value_name", KeyError, "labels_configs.AERIAL_LABEL-COSIA.value_name"),
    ],
)
def test_bad_keys_are_named(path, value, named):
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        build_model(_broken(path, value), device="meta")


def test_no_enabled_input_is_an_error():
    cfg = make_config([], [LC])
    with pytest.raises(ConfigError, match="no input modality is enabled"):
        ModelSpec.from_config(cfg)
