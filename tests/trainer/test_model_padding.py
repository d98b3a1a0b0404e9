"""Padded dates are masked out: an item's logits do not depend on how far it is padded."""

from __future__ import annotations

import pytest
import torch

from tools.param_table import make_config
from trainer.model import build_model
from trainer.model.synthetic import synthetic_batch

TINY_UTAE = {"encoder_widths": [8, 8, 16], "decoder_widths": [8, 8, 16], "out_conv": [8, 19], "n_head": 4, "d_model": 16}
SIZES = {"AERIAL_RGBI": 32, "SENTINEL2_TS": 4, "SENTINEL1-ASC_TS": 4}


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _model(inputs, **multitemp):
    cfg = make_config(inputs, ["AERIAL_LABEL-COSIA", "ALL_LABEL-LPIS"], arch="test_convnext-upernet",
                      multitemp={**TINY_UTAE, **multitemp}, aux=True)
    return build_model(cfg, input_sizes=SIZES).eval()


def _item(batch, i, length):
    """Item i of a batch, cut to its real dates (what it would look like batched alone)."""
    inputs = {k: v[i:i + 1, :length] if v.dim() == 5 else v[i:i + 1] for k, v in batch.inputs.items()}
    dates = {k: v[i:i + 1, :length] for k, v in batch.dates.items()}
    masks = {k: v[i:i + 1, :length] for k, v in batch.pad_masks.items()}
    return inputs, dates, masks


def _all_logits(out):
    return [out.tasks[t] for t in sorted(out.tasks)] + [out.aux[t][m] for t in sorted(out.aux) for m in sorted(out.aux[t])]


@pytest.mark.parametrize("agg_mode", ["att_group", "att_mean", "mean"])
@pytest.mark.parametrize("inputs", [("SENTINEL2_TS",), ("AERIAL_RGBI", "SENTINEL2_TS", "SENTINEL1-ASC_TS")])
@pytest.mark.parametrize("explicit_masks", [True, False])
def test_padded_items_match_their_unpadded_run(inputs, agg_mode, explicit_masks):
    model = _model(inputs, agg_mode=agg_mode)
    lengths = [5, 2, 4]
    batch = synthetic_batch(model.spec, batch_size=3, lengths=lengths, seed=1)
    with torch.no_grad():
        together = model(batch.inputs, batch.dates, batch.pad_masks if explicit_masks else None, out_size=16)
        for i, n in enumerate(lengths):
            inputs_i, dates_i, masks_i = _item(batch, i, n)
            alone = model(inputs_i, dates_i, masks_i if explicit_masks else None, out_size=16)
            for a, b in zip(_all_logits(together), _all_logits(alone)):
                torch.testing.assert_close(a[i:i + 1], b, rtol=1e-4, atol=1e-5)


def test_padding_values_are_ignored_when_masks_are_given():
    """With explicit masks, whatever sits in padded dates (here noise) has no effect."""
    model = _model(("SENTINEL2_TS",))
    batch = synthetic_batch(model.spec, batch_size=2, lengths=[4, 2], seed=2)
    noisy = {k: v.clone() for k, v in batch.inputs.items()}
    noisy["SENTINEL2_TS"][1, 2:] = torch.randn_like(noisy["SENTINEL2_TS"][1, 2:])
    noisy_dates = {k: v.clone() for k, v in batch.dates.items()}
    noisy_dates["SENTINEL2_TS"][1, 2:] = 999.0
    with torch.no_grad():
        ref = model(batch.inputs, batch.dates, batch.pad_masks, out_size=8)
        out = model(noisy, noisy_dates, batch.pad_masks, out_size=8)
        unmasked = model(noisy, noisy_dates, None, out_size=8)
    for a, b in zip(_all_logits(ref), _all_logits(out)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # Without masks the noise is taken for real dates: the test above is not vacuous.
    assert not torch.allclose(ref.tasks["ALL_LABEL-LPIS"][1], unmasked.tasks["ALL_LABEL-LPIS"][1])
