"""One raw sample (stored arrays + metadata) -> one compact preprocessed sample.

`SampleSpec` gathers, from the validated config, everything the per-sample preprocessing needs;
`preprocess_sample` chains the named functions of `trainer.data.preprocess` in the reference's
order. Outputs keep compact dtypes (uint8 / uint16 / float32 as stored, uint8 class maps) so that
handing a sample between processes stays cheap; `trainer.data.normalize` finishes the
conversion batched, in the main process or on the device.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from packer.schema import INPUT_MODALITIES, MODALITIES, SENTINEL2_MASK_OF, TIME_SERIES_INPUTS
from packer.schema import batch_dates_key as dates_key
from packer.schema import batch_pad_mask_key as pad_mask_key
from trainer.config import active_inputs, selected_channels
from trainer.data import preprocess as pp

S2_MASK, S2 = next(iter(SENTINEL2_MASK_OF.items()))  # the S2 mask and its series: `Modality.mask_of`


@dataclass(frozen=True)
class SampleSpec:
    """What to produce for each sample; built from a validated config by `from_config`."""

    inputs: tuple[str, ...]
    tasks: tuple[str, ...]
    channels: Mapping[str, tuple[int, ...] | None]
    label_channels: Mapping[str, int]
    calc_elevation: bool = True
    stack_dsm: bool = True
    filter_s2: bool = True
    max_cloud: float = 1
    max_snow: float = 1
    max_frac_cover: float = 0.05
    average: Mapping[str, str | bool] = field(default_factory=dict)  # series -> period or False
    ref_date: str = "05-15"
    augment: bool = False
    norm_type: str = "custom"
    means: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    stds: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    pad_value: float = 0  # models.multitemp_model.pad_value: a date holding only this value is padding

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], augment: bool | None = None) -> "SampleSpec":
        """`augment=None` follows `pre_processings.use_augmentation` (pass False for val/test)."""
        mods = cfg["modalities"]
        pre = mods["pre_processings"]
        norm = mods["normalization"]
        inputs = tuple(active_inputs(cfg))
        channels = {m: (tuple(c) if (c := selected_channels(cfg, m)) else None) for m in inputs}
        tasks = tuple(cfg["labels"])
        label_channels = {t: int(cfg["labels_configs"][t].get("label_channel_nomenclature", 1)) for t in tasks}
        average = {m: pre[MODALITIES[m].temporal_average_key] for m in TIME_SERIES_INPUTS}
        return cls(
            inputs=inputs, tasks=tasks, channels=channels, label_channels=label_channels,
            calc_elevation=pre["calc_elevation"], stack_dsm=pre["calc_elevation_stack_dsm"],
            filter_s2=pre["filter_sentinel2"],
            max_cloud=pre.get("filter_sentinel2_max_cloud", 1), max_snow=pre.get("filter_sentinel2_max_snow", 1),
            max_frac_cover=pre.get("filter_sentinel2_max_frac_cover", 0.05),
            average=average, ref_date=cfg["models"]["multitemp_model"]["ref_date"],
            augment=pre["use_augmentation"] if augment is None else augment,
            norm_type=norm["norm_type"],
            means={m: tuple(norm.get(f"{m}_means") or ()) for m in inputs},
            stds={m: tuple(norm.get(f"{m}_stds") or ()) for m in inputs},
            pad_value=float(cfg["models"]["multitemp_model"].get("pad_value", 0) or 0),
        )

    @classmethod
    def from_zonal_config(cls, cfg: Mapping[str, Any]) -> "SampleSpec":
        """The same preprocessing from a validated flair-zonal config (the reference's zonal keys).

        That config sets normalisation per modality; the spec carries each mono input's custom
        statistics, and the caller applies each modality's own `normalization.type`.
        """
        mods = cfg["modalities"]
        inputs = tuple(m for m in INPUT_MODALITIES if mods["inputs"].get(m))
        means, stds = {}, {}
        for m in inputs:
            if m not in TIME_SERIES_INPUTS:
                norm = mods[m]["normalization"]
                means[m] = tuple(norm.get("means") or ())
                stds[m] = tuple(norm.get("stds") or ())
        s2 = mods.get(S2) or {}
        dem = mods.get("DEM_ELEV") or {}
        average = {m: ((mods[m].get("average_period") or "monthly") if mods[m].get("temporal_average") else False)
                   for m in inputs if m in TIME_SERIES_INPUTS}
        return cls(
            inputs=inputs, tasks=(),
            channels={m: (tuple(mods[m]["channels"]) if mods[m].get("channels") else None) for m in inputs},
            label_channels={},
            calc_elevation=bool(dem.get("calc_elevation", False)), stack_dsm=bool(dem.get("calc_elevation_stack_dsm", False)),
            filter_s2=bool(S2 in inputs and s2.get("filter_clouds")),
            max_cloud=s2.get("filter_max_cloud", 1), max_snow=s2.get("filter_max_snow", 1),
            max_frac_cover=s2.get("filter_max_frac_cover", 0.05),
            average=average, ref_date=cfg["multitemp_model_ref_date"], augment=False,
            norm_type="custom", means=means, stds=stds,
        )

    @property
    def needed_modalities(self) -> tuple[str, ...]:
        """Stored modalities a sample must be read with (the S2 mask only when filtering)."""
        extra = tuple(mask for m in self.inputs if (mask := MODALITIES[m].mask)) if self.filter_s2 else ()
        return (*self.inputs, *extra, *self.tasks)

    @property
    def series(self) -> tuple[str, ...]:
        return tuple(m for m in self.inputs if m in TIME_SERIES_INPUTS)

    @property
    def mono(self) -> tuple[str, ...]:
        return tuple(m for m in self.inputs if m not in TIME_SERIES_INPUTS)


def sample_seed(seed: int, epoch: int, patch_id: str) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, sample): same draws whatever the worker layout."""
    return np.random.default_rng([seed, epoch, zlib.crc32(patch_id.encode())])


def preprocess_series(
    name: str, arr: np.ndarray, dates: list[str], spec: SampleSpec, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One series: split dates, select channels, S2 filter, offsets, optional temporal average."""
    series = pp.select_series_channels(pp.split_dates(arr, MODALITIES[name].bands_per_date), spec.channels.get(name))
    when = pp.parse_dates(dates)
    if len(when) != series.shape[0]:
        raise ValueError(f"{name}: {series.shape[0]} dates in the array but {len(when)} acquisition dates")
    mask_name = MODALITIES[name].mask
    if mask_name and spec.filter_s2:
        if mask is None:
            raise ValueError(f"{name}: filter_sentinel2 is on but the sample has no {mask_name}")
        keep = pp.filter_sentinel2_dates(
            pp.split_dates(mask, MODALITIES[mask_name].bands_per_date), spec.max_cloud, spec.max_snow,
            spec.max_frac_cover)
        idx = np.flatnonzero(keep)
        series = series[idx]
        when = [when[i] for i in idx]
    period = spec.average.get(name)
    if period:
        values, offsets = pp.temporal_average(series, when, period, spec.ref_date)
        # The reference casts the float64 means to float32 when building its tensors; doing it
        # here is the same rounding and halves what crosses the process boundary.
        return values.astype(np.float32), offsets
    return series, pp.date_offsets(when, spec.ref_date)


def preprocess_sample(raw: Mapping[str, Any], spec: SampleSpec, seed: int = 0, epoch: int = 0) -> dict[str, Any]:
    """Raw sample `{"patch_id", "meta", "arrays": {modality: stored array}}` -> compact sample.

    Output keys: `patch_id`; each mono input `(C,H,W)`; each series `(T,C,H,W)` plus its
    `dates_key` offsets `(T,)` and its `pad_mask_key` `(T,)` dates holding only `pad_value`
    (padding by the reference's value rule); each task an `(H,W)` class map. Values are the reference's before
    its normalisation and float conversion (see `trainer.data.normalize`).
    """
    arrays = raw["arrays"]
    meta_mods = raw["meta"].get("modalities", {})
    out: dict[str, Any] = {"patch_id": raw["patch_id"]}
    for name in spec.inputs:
        arr = arrays[name]
        mod = MODALITIES[name]
        if mod.elevation:
            out[name] = pp.calc_elevation(arr, spec.stack_dsm) if spec.calc_elevation else arr
        elif mod.series_input:
            dates = meta_mods.get(name, {}).get("dates")
            if dates is None:
                raise ValueError(f"{raw['patch_id']}: no acquisition dates for {name} in its metadata")
            try:
                out[name], out[dates_key(name)] = preprocess_series(name, arr, dates, spec, arrays.get(mod.mask))
            except ValueError as exc:
                raise ValueError(f"{raw['patch_id']}: {exc}") from None
            out[pad_mask_key(name)] = pp.empty_dates(out[name], spec.pad_value)
        else:
            out[name] = pp.select_channels(arr, spec.channels.get(name))
    for task in spec.tasks:
        out[task] = pp.label_channel(arrays[task], spec.label_channels[task])
    if spec.augment:
        draws = pp.augmentation_draws(sample_seed(seed, epoch, raw["patch_id"]))
        for key in (*spec.inputs, *spec.tasks):
            out[key] = pp.augment(out[key], draws)
        out["augment"] = draws
    for key in (*spec.inputs, *spec.tasks):
        out[key] = np.ascontiguousarray(out[key])
    return out
