"""`<S>_PAD_MASK` = past the series length OR a date holding only `pad_value` (the reference's rule).

The reference's U-TAE (`src/flair_hub/models/multitemp_model.py::UTAE.forward`) takes as padding
every date whose values all equal `pad_value`: `(input == pad_value).all(-1).all(-1).all(-1)` on
the collated batch. Months without an acquisition before the first one of a temporal average are
zeros there, and so is a series emptied by the cloud filter; our loader's mask must say the same.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tools.param_table import make_config
from trainer.data import pad_mask_key
from trainer.data.collate import collate
from trainer.data.normalize import to_model_inputs
from trainer.data.sample import S2, S2_MASK, SampleSpec, preprocess_sample
from trainer.model import build_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")

TINY_UTAE = {"encoder_widths": [8, 8, 16], "decoder_widths": [8, 8, 16], "out_conv": [8, 19], "n_head": 4, "d_model": 16}


def _spec(average: str | bool = "monthly", filter_s2: bool = False) -> SampleSpec:
    return SampleSpec(inputs=(S2,), tasks=(), channels={S2: None}, label_channels={}, filter_s2=filter_s2,
                      average={S2: average}, ref_date="05-15", norm_type="without")


def _raw(pid: str, dates: list[str], seed: int, zero_dates: tuple[int, ...] = (), cloudy: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    arr = rng.integers(1, 3000, (len(dates) * 10, 4, 4), dtype=np.uint16)
    for d in zero_dates:  # an acquisition holding only zeros (e.g. nodata everywhere)
        arr[d * 10:(d + 1) * 10] = 0
    mask = np.full((len(dates) * 2, 4, 4), 90 if cloudy else 0, dtype=np.uint8)  # snow and cloud everywhere
    return {"patch_id": pid, "meta": {"modalities": {S2: {"dates": dates}}}, "arrays": {S2: arr, S2_MASK: mask}}


def _reference_mask(batch_series: torch.Tensor, pad_value: float = 0) -> torch.Tensor:
    """The reference U-TAE's rule, verbatim: `(input == self.pad_value).all(dim=-1).all(dim=-1).all(dim=-1)`."""
    return (batch_series == pad_value).all(dim=-1).all(dim=-1).all(dim=-1)


def test_monthly_average_with_empty_leading_and_middle_months() -> None:
    spec = _spec("monthly")
    # No acquisition in January-March (leading, zero-filled) nor in June and July (middle: both
    # codebases repeat May's mean there, so they are data); the August acquisition is all zeros.
    raw = _raw("a", ["20210402", "20210420", "20210511", "20210803", "20211015"], seed=0, zero_dates=(3,))
    sample = preprocess_sample(raw, spec)
    empty = sample[pad_mask_key(S2)]
    expected = np.zeros(12, dtype=bool)
    # Jan, Feb, Mar (no data yet), August (an all-zero acquisition) and September (repeats August)
    expected[[0, 1, 2, 7, 8]] = True
    np.testing.assert_array_equal(empty, expected)
    assert sample[S2][5].any() and np.array_equal(sample[S2][5], sample[S2][4])  # June repeats May: not padding


def test_batch_mask_equals_the_reference_value_rule_united_with_lengths() -> None:
    averaged = preprocess_sample(_raw("a", ["20210402", "20210511", "20210803"], seed=1), _spec("monthly"))
    raw_short = preprocess_sample(_raw("b", ["20210110", "20210301"], seed=2, zero_dates=(1,)), _spec(False))
    plain = _spec(False)
    batch = collate([preprocess_sample(_raw("c", [f"2021{m:02d}10" for m in range(1, 7)], seed=3), plain), raw_short],
                    plain)
    inputs = to_model_inputs(batch, plain)
    mask = inputs[pad_mask_key(S2)]
    ref = _reference_mask(inputs[S2])
    assert torch.equal(mask, ref)
    assert mask.tolist() == [[False] * 6, [False, True, True, True, True, True]]  # length 2, its 2nd date all zeros
    batch = collate([averaged], _spec("monthly"))
    inputs = to_model_inputs(batch, _spec("monthly"))
    assert torch.equal(inputs[pad_mask_key(S2)], _reference_mask(inputs[S2]))
    assert inputs[pad_mask_key(S2)][0, :3].all() and not inputs[pad_mask_key(S2)][0, 3:].any()


@pytest.mark.parametrize("average", ["monthly", False])
def test_a_series_emptied_by_the_cloud_filter_is_all_padding(average) -> None:
    spec = _spec(average, filter_s2=True)
    other = _spec(average, filter_s2=True)
    empty = preprocess_sample(_raw("cloudy", ["20210110", "20210601"], seed=4, cloudy=True), spec)
    full = preprocess_sample(_raw("clear", ["20210110", "20210601", "20210901"], seed=5), other)
    inputs = to_model_inputs(collate([full, empty], spec), spec)
    mask = inputs[pad_mask_key(S2)]
    assert mask[1].all() and torch.equal(mask, _reference_mask(inputs[S2]))


def test_model_given_the_loader_mask_equals_the_reference_value_rule() -> None:
    """Logits with the loader's mask = logits with the U-TAE deriving the mask from the values."""
    cfg = make_config(["SENTINEL2_TS"], ["AERIAL_LABEL-COSIA"], multitemp=TINY_UTAE)
    cfg["models"]["monotemp_model"]["encoder_weights"] = None
    model = build_model(cfg, input_sizes={S2: 4}).eval()
    spec = _spec("monthly")
    raws = [_raw("a", ["20210402", "20210511", "20210803"], seed=6),
            _raw("b", ["20210110", "20210620", "20210915", "20211120"], seed=7, zero_dates=(1,))]
    inputs = to_model_inputs(collate([preprocess_sample(r, spec) for r in raws], spec), spec)
    dates = {S2: inputs["SENTINEL2_DATES"]}
    with torch.no_grad():
        ours = model(inputs, dates, {S2: inputs[pad_mask_key(S2)]}, out_size=4).tasks
        by_values = model(inputs, dates, None, out_size=4).tasks
        length_only = model(inputs, dates, {S2: torch.zeros_like(inputs[pad_mask_key(S2)])}, out_size=4).tasks
    for task in ours:
        torch.testing.assert_close(ours[task], by_values[task], rtol=0, atol=0)
        assert not torch.allclose(ours[task], length_only[task])  # the zero months matter
