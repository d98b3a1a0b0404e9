"""Fusion of the branches' multi-scale feature maps (the reference's `FusionHandler`).

Cases, as in the reference:
1. one mono-temporal branch and no series: its maps pass through;
2. one series and no mono-temporal branch: its (logit) map passes through;
3. several series and no mono-temporal branch: their logit maps are averaged;
4. otherwise: every branch's maps are resized to the main (first) mono-temporal branch's scales,
   concatenated per scale and mixed back to the main branch's widths by 1x1 convolutions
   (`conv_f.<i>`). A branch with fewer maps repeats its first (deepest for U-TAE) map; smp's
   leading (input, 0-channel dummy) stages of transformer encoders are set aside and put back.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def has_dummy_stage(maps: Sequence[Tensor]) -> bool:
    return len(maps) > 2 and (maps[0].shape[1] == 0 or maps[1].shape[1] == 0)


class FusionHandler(nn.Module):
    def __init__(self, backbones_channels: list[int], target_channels: list[int], mono_keys: Sequence[str], multi_keys: Sequence[str]) -> None:
        super().__init__()
        self.mono_keys = tuple(mono_keys)
        self.multi_keys = tuple(multi_keys)
        if len(target_channels) > 2 and (target_channels[0] == 0 or target_channels[1] == 0):
            target_channels = target_channels[2:]
        self.conv_f = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=1) for c_in, c_out in zip(backbones_channels, target_channels)
        )

    def forward(self, feature_maps: Mapping[str, list[Tensor] | Tensor], target_maps: list[Tensor] | Tensor) -> list[Tensor] | Tensor:
        keys = list(feature_maps)
        mono = [k for k in keys if k in self.mono_keys]
        multi = [k for k in keys if k in self.multi_keys]
        if len(mono) == 1 and not multi:
            return feature_maps[mono[0]]
        if not mono and len(multi) == 1:
            return feature_maps[multi[0]]
        if not mono:
            return torch.stack([feature_maps[k] for k in multi]).mean(dim=0)

        assert isinstance(target_maps, list)
        prefix = target_maps[:2] if has_dummy_stage(target_maps) else []
        sizes = [m.shape[-2:] for m in target_maps[len(prefix):]]
        per_branch = []
        for key in keys:
            maps = list(feature_maps[key])
            if has_dummy_stage(maps):
                maps = maps[2:]
            if len(maps) < len(sizes):
                maps = [maps[0]] * (len(sizes) - len(maps)) + maps
            per_branch.append(
                [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m, size in zip(maps, sizes)]
            )
        stacked = [torch.cat(scale, dim=1) for scale in zip(*per_branch)]
        return prefix + [conv(m) for conv, m in zip(self.conv_f, stacked)]
