"""U-TAE (Garnot & Landrieu 2021): the time-series branch of FLAIR-UPerFuse.

A convolutional encoder shared across dates turns each image of a `(B, T, C, H, W)` series into
multi-scale feature maps; an L-TAE collapses the deepest ones over time and its attention masks
collapse every shallower skip map ("att_group": one weight per head and channel group); a
convolutional decoder brings the result back up. `forward` returns the class logits of the output
convolution and the decoder's maps, deepest first (the fusion handler consumes both).

Padded dates (flagged by a `(B, T)` mask) are never convolved: their feature maps hold
`pad_value`, they get no attention and are left out of every temporal statistic.

Module names (`in_conv`, `down_blocks`, `up_blocks`, `temporal_encoder`, `out_conv`, and the
`conv.conv.<i>` / `down` / `conv1` / `conv2` / `skip_conv` / `up` nesting) reproduce the reference
implementation's state-dict keys so its released checkpoints load unchanged.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .ltae import LTAE2d, resize_attention
from .spec import UTAESpec


def _norm_factory(norm: str, n_groups: int = 4) -> Callable[[int], nn.Module] | None:
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "instance":
        return nn.InstanceNorm2d
    if norm == "group":
        return lambda c: nn.GroupNorm(num_groups=n_groups, num_channels=c)
    return None


class ConvLayer(nn.Module):
    """A stack of conv -> norm -> ReLU for the widths in `nkernels` (keys `conv.<i>`)."""

    def __init__(
        self,
        nkernels: list[int],
        norm: str = "batch",
        k: int = 3,
        s: int = 1,
        p: int = 1,
        last_relu: bool = True,
        padding_mode: str = "reflect",
    ) -> None:
        super().__init__()
        make_norm = _norm_factory(norm)
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(nkernels[:-1], nkernels[1:])):
            layers.append(nn.Conv2d(c_in, c_out, kernel_size=k, stride=s, padding=p, padding_mode=padding_mode))
            if make_norm is not None:
                layers.append(make_norm(c_out))
            if last_relu or i < len(nkernels) - 2:
                layers.append(nn.ReLU())
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class PerDateBlock(nn.Module):
    """A 4-D conv block applied to every non-padded date of a 5-D series.

    Padded dates are skipped (their output is filled with `pad_value`) so they cost nothing and
    cannot leak into normalisation statistics.
    """

    def __init__(self, pad_value: float | None) -> None:
        super().__init__()
        self.pad_value = pad_value

    def per_date(self, x: Tensor, pad_mask: Tensor | None) -> Tensor:
        if x.dim() == 4:
            return self(x)
        b, t, c, h, w = x.shape
        flat = x.reshape(b * t, c, h, w)
        if pad_mask is None or self.pad_value is None or not bool(pad_mask.any()):
            out = self(flat)
        else:
            valid = ~pad_mask.reshape(b * t)
            # A batch with no valid date still needs the output shape: run one dummy date.
            computed = self(flat[valid]) if bool(valid.any()) else self(flat[:1]).detach()
            out = computed.new_full((b * t, *computed.shape[1:]), self.pad_value)
            out[valid] = computed[: int(valid.sum())]
        return out.view(b, t, *out.shape[1:])


class ConvBlock(PerDateBlock):
    """`ConvLayer` usable on series (keys `conv.conv.<i>`)."""

    def __init__(
        self,
        nkernels: list[int],
        pad_value: float | None = None,
        norm: str = "batch",
        last_relu: bool = True,
        padding_mode: str = "reflect",
    ) -> None:
        super().__init__(pad_value)
        self.conv = ConvLayer(nkernels=nkernels, norm=norm, last_relu=last_relu, padding_mode=padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class DownConvBlock(PerDateBlock):
    """Strided conv then a residual pair of convs (one encoder stage)."""

    def __init__(self, d_in: int, d_out: int, k: int, s: int, p: int, pad_value: float | None, norm: str, padding_mode: str) -> None:
        super().__init__(pad_value)
        self.down = ConvLayer([d_in, d_in], norm=norm, k=k, s=s, p=p, padding_mode=padding_mode)
        self.conv1 = ConvLayer([d_in, d_out], norm=norm, padding_mode=padding_mode)
        self.conv2 = ConvLayer([d_out, d_out], norm=norm, padding_mode=padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.down(x))
        return out + self.conv2(out)


class UpConvBlock(nn.Module):
    """Transposed conv, concatenation with the (1x1-projected) temporally aggregated skip, residual convs."""

    def __init__(self, d_in: int, d_out: int, d_skip: int, k: int, s: int, p: int, norm: str, padding_mode: str) -> None:
        super().__init__()
        self.skip_conv = nn.Sequential(nn.Conv2d(d_skip, d_skip, kernel_size=1), nn.BatchNorm2d(d_skip), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(d_in, d_out, kernel_size=k, stride=s, padding=p), nn.BatchNorm2d(d_out), nn.ReLU()
        )
        self.conv1 = ConvLayer([d_out + d_skip, d_out], norm=norm, padding_mode=padding_mode)
        self.conv2 = ConvLayer([d_out, d_out], norm=norm, padding_mode=padding_mode)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        out = self.up(x)
        if out.shape[-2:] != skip.shape[-2:]:
            raise ValueError(
                f"U-TAE up-sampled map {tuple(out.shape[-2:])} does not match its skip {tuple(skip.shape[-2:])}: "
                "check str_conv_k/s/p against the series' size"
            )
        out = self.conv1(torch.cat([out, self.skip_conv(skip)], dim=1))
        return out + self.conv2(out)


def aggregate_over_time(x: Tensor, attn: Tensor, pad_mask: Tensor, mode: str) -> Tensor:
    """Collapse a `(B, T, C, H, W)` skip map over T with the L-TAE attention (padded dates excluded)."""
    valid = (~pad_mask).to(x.dtype)  # B x T
    if mode == "mean":
        return (x * valid[:, :, None, None, None]).sum(dim=1) / valid.sum(dim=1).clamp_min(1)[:, None, None, None]
    attn = resize_attention(attn, x.shape[-2:])
    if mode == "att_mean":
        weights = attn.mean(dim=0) * valid[:, :, None, None]  # B x T x H x W
        return (x * weights[:, :, None]).sum(dim=1)
    n_head = attn.shape[0]
    weights = attn * valid[None, :, :, None, None]  # h x B x T x H x W
    groups = torch.stack(x.chunk(n_head, dim=2))  # h x B x T x C/h x H x W
    out = (weights[:, :, :, None] * groups).sum(dim=2)  # h x B x C/h x H x W
    return torch.cat(list(out), dim=1)


class UTAE(nn.Module):
    """U-TAE returning `(logits, maps)`: logits `(B, out_conv[-1], H', W')`, maps deepest first."""

    def __init__(self, input_dim: int, spec: UTAESpec) -> None:
        super().__init__()
        enc, dec = list(spec.encoder_widths), list(spec.decoder_widths)
        self.n_stages = len(enc)
        self.pad_value = spec.pad_value
        self.agg_mode = spec.agg_mode
        norm, pm = spec.encoder_norm, spec.padding_mode
        strided = dict(k=spec.str_conv_k, s=spec.str_conv_s, p=spec.str_conv_p)
        self.in_conv = ConvBlock([input_dim, enc[0], enc[0]], pad_value=spec.pad_value, norm=norm, padding_mode=pm)
        self.down_blocks = nn.ModuleList(
            DownConvBlock(enc[i], enc[i + 1], pad_value=spec.pad_value, norm=norm, padding_mode=pm, **strided)
            for i in range(self.n_stages - 1)
        )
        self.up_blocks = nn.ModuleList(
            UpConvBlock(dec[i], dec[i - 1], d_skip=enc[i - 1], norm="batch", padding_mode=pm, **strided)
            for i in range(self.n_stages - 1, 0, -1)
        )
        self.temporal_encoder = LTAE2d(
            in_channels=enc[-1], n_head=spec.n_head, d_k=spec.d_k, mlp=[spec.d_model, enc[-1]], d_model=spec.d_model
        )
        self.out_conv = ConvBlock([dec[0], *spec.out_conv], padding_mode=pm)

    def padding_mask(self, x: Tensor) -> Tensor:
        """The reference's rule when no mask is given: a date whose every value is `pad_value`."""
        return (x == self.pad_value).flatten(2).all(dim=-1)

    def forward(self, x: Tensor, positions: Tensor, pad_mask: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        if x.dim() != 5:
            raise ValueError(f"U-TAE expects a (B, T, C, H, W) series, got shape {tuple(x.shape)}")
        if positions.shape != x.shape[:2]:
            raise ValueError(f"U-TAE dates must be (B, T) = {tuple(x.shape[:2])}, got {tuple(positions.shape)}")
        if pad_mask is None:
            pad_mask = self.padding_mask(x)
        elif pad_mask.shape != x.shape[:2]:
            raise ValueError(f"U-TAE pad mask must be (B, T) = {tuple(x.shape[:2])}, got {tuple(pad_mask.shape)}")
        pad_mask = pad_mask.bool()
        skips = [self.in_conv.per_date(x, pad_mask)]
        for block in self.down_blocks:
            skips.append(block.per_date(skips[-1], pad_mask))
        out, attn = self.temporal_encoder(skips[-1], positions, pad_mask)
        maps = [out]
        for i, block in enumerate(self.up_blocks):
            skip = aggregate_over_time(skips[-(i + 2)], attn, pad_mask, self.agg_mode)
            out = block(out, skip)
            maps.append(out)
        return self.out_conv(out), maps
