"""FLAIR-UPerFuse forward: output shapes for every input combination, both tasks, aux decoders."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from tools.param_table import make_config
from trainer.model import build_model, monotemp
from trainer.model.spec import INPUT_KEYS
from trainer.model.synthetic import synthetic_batch

TASKS = ["AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS"]
N_CLASSES = {"AERIAL_LABEL-COSIA": 19, "ALL_LABEL-LPIS": 23}
TINY_UTAE = {"encoder_widths": [8, 8, 16], "decoder_widths": [8, 8, 16], "out_conv": [8, 19], "n_head": 4, "d_model": 16}
SMALL_SIZES = {"AERIAL_RGBI": 32, "AERIAL-RLT_PAN": 32, "DEM_ELEV": 32, "SPOT_RGBI": 32,
               "SENTINEL2_TS": 4, "SENTINEL1-ASC_TS": 4, "SENTINEL1-DESC_TS": 4}
COMBINATIONS = [c for k in range(1, len(INPUT_KEYS) + 1) for c in itertools.combinations(INPUT_KEYS, k)]


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def reuse_smp_builds():
    """Build each distinct smp model once and hand out copies (127 combinations re-use 4 encoders).

    Only the timm/smp construction is shared: spec, branches, fusion and decoders are still
    built per combination by our code.
    """
    cache: dict = {}
    original = monotemp.create_smp_model

    def cached(*args, **kwargs):
        key = (torch.empty(0).device.type, args, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = original(*args, **kwargs)
        return copy.deepcopy(cache[key])

    patch = pytest.MonkeyPatch()
    patch.setattr(monotemp, "create_smp_model", cached)
    yield
    patch.undo()


def _run(arch, inputs, tasks=TASKS, sizes=SMALL_SIZES, out_size=32, **kw):
    model = build_model(make_config(inputs, tasks, arch=arch, multitemp=TINY_UTAE, aux=True, **kw),
                        input_sizes={m: sizes[m] for m in inputs}).eval()
    batch = synthetic_batch(model.spec, batch_size=2, lengths=[3, 2])
    with torch.no_grad():
        out = model(batch.inputs, batch.dates, batch.pad_masks, out_size=out_size)
    return model, out


@pytest.mark.parametrize("inputs", COMBINATIONS, ids=["+".join(c) for c in COMBINATIONS])
def test_every_input_combination_gives_task_and_aux_logits(inputs, reuse_smp_builds):
    # test_convnext is transformer-style in smp (a 0-channel stage, like Swin): the fusion's hard case.
    model, out = _run("test_convnext-upernet", inputs)
    assert set(out.tasks) == set(TASKS)
    for task in TASKS:
        assert out.tasks[task].shape == (2, N_CLASSES[task], 32, 32)
        assert torch.isfinite(out.tasks[task]).all()
        assert set(out.aux[task]) == set(inputs)
        for logits in out.aux[task].values():
            assert logits.shape == (2, N_CLASSES[task], 32, 32)
    assert set(model.aux_decoders) == {f"{m}__{t}" for m in inputs for t in TASKS}


@pytest.mark.parametrize(
    "arch, inputs, sizes",
    [
        ("resnet18-unet", ("AERIAL_RGBI", "DEM_ELEV", "SENTINEL2_TS"), SMALL_SIZES),
        ("resnet18-unet", ("SPOT_RGBI",), SMALL_SIZES),
        # Real relative sizes (aerial 4x SPOT): the SPOT encoder's Swin windows shrink.
        ("swin_tiny_patch4_window7_224-upernet", ("AERIAL_RGBI", "SPOT_RGBI", "SENTINEL1-ASC_TS"),
         {"AERIAL_RGBI": 128, "SPOT_RGBI": 32, "SENTINEL1-ASC_TS": 4}),
    ],
)
def test_small_reference_architectures_forward(arch, inputs, sizes):
    _, out = _run(arch, inputs, sizes=sizes, out_size=40)
    for task in TASKS:
        assert out.tasks[task].shape == (2, N_CLASSES[task], 40, 40)
        assert all(a.shape == (2, N_CLASSES[task], 40, 40) for a in out.aux[task].values())


def test_single_task_without_aux_has_no_aux_outputs():
    model = build_model(make_config(["AERIAL_RGBI"], ["ALL_LABEL-LPIS"], arch="test_convnext-upernet"),
                        input_sizes={"AERIAL_RGBI": 32}).eval()
    batch = synthetic_batch(model.spec)
    out = model(batch.inputs, out_size=32)
    assert list(out.tasks) == ["ALL_LABEL-LPIS"] and out.aux == {"ALL_LABEL-LPIS": {}}
    assert len(model.aux_decoders) == 0


def test_default_output_size_is_the_label_size():
    model = build_model(make_config(["SENTINEL2_TS"], ["AERIAL_LABEL-COSIA"], multitemp=TINY_UTAE)).eval()
    batch = synthetic_batch(model.spec, sizes={"SENTINEL2_TS": 4})
    with torch.no_grad():
        out = model(batch.inputs, batch.dates)
    assert out.tasks["AERIAL_LABEL-COSIA"].shape == (2, 19, 512, 512)


def test_missing_inputs_and_dates_are_named():
    model = build_model(make_config(["AERIAL_RGBI", "SENTINEL2_TS"], TASKS, arch="test_convnext-upernet",
                                    multitemp=TINY_UTAE), input_sizes=SMALL_SIZES).eval()
    batch = synthetic_batch(model.spec)
    with pytest.raises(KeyError, match="SENTINEL2_TS"):
        model({"AERIAL_RGBI": batch.inputs["AERIAL_RGBI"]}, batch.dates)
    with pytest.raises(KeyError, match="dates of 'SENTINEL2_TS'"):
        model(batch.inputs, {})
    # The reference loader's layout (dates inside the batch) is accepted too.
    with torch.no_grad():
        ours = model(batch.inputs, batch.dates, out_size=32).tasks
        ref_layout = model({**batch.inputs, "SENTINEL2_DATES": batch.dates["SENTINEL2_TS"]}, out_size=32).tasks
    assert all(torch.equal(ours[t], ref_layout[t]) for t in TASKS)


def test_modality_dropout_follows_configured_probabilities():
    inputs = ["AERIAL_RGBI", "DEM_ELEV"]
    cfg = make_config(inputs, ["AERIAL_LABEL-COSIA"], arch="test_convnext-upernet",
                      dropout={"DEM_ELEV": 1.0})
    model = build_model(cfg, input_sizes=SMALL_SIZES)
    batch = synthetic_batch(model.spec)
    model.eval()  # fixed normalisation statistics: only the dropout changes outputs
    with torch.no_grad():
        plain = model(batch.inputs, out_size=32).tasks["AERIAL_LABEL-COSIA"]
        same = model(batch.inputs, out_size=32, modality_dropout=False).tasks["AERIAL_LABEL-COSIA"]
        dropped = model(batch.inputs, out_size=32, modality_dropout=True).tasks["AERIAL_LABEL-COSIA"]
        # DEM always dropped: its input no longer matters, the aerial one does.
        other_dem = dict(batch.inputs, DEM_ELEV=torch.randn_like(batch.inputs["DEM_ELEV"]))
        torch.manual_seed(0)
        a = model(batch.inputs, out_size=32, modality_dropout=True).tasks["AERIAL_LABEL-COSIA"]
        torch.manual_seed(0)
        b = model(other_dem, out_size=32, modality_dropout=True).tasks["AERIAL_LABEL-COSIA"]
    assert torch.equal(plain, same)
    assert not torch.allclose(plain, dropped)
    assert torch.allclose(a, b)
    model.train()
    assert model.spec.modality_dropout == {"AERIAL_RGBI": 0.0, "DEM_ELEV": 1.0}
