"""Lightweight Temporal Attention Encoder (L-TAE, Garnot & Landrieu 2020) for feature-map series.

One shared attention encoder runs at every pixel of a `(B, T, C, H, W)` series: a learnt query per
head attends over the T dates (keys from the features, values = channel groups), the heads'
outputs are concatenated and passed through an MLP. Acquisition dates enter as a sinusoidal
encoding of their day offsets. Padded dates are masked out of the attention *and* of the input
normalisation statistics, so a padded item gives the same result as the same item unpadded.

Submodule names (`in_norm`, `inconv`, `attention_heads.Q`, `attention_heads.fc1_k`, `mlp`,
`out_norm`) reproduce the reference's state-dict keys; the positional table is not a parameter.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

MASKED_SCORE = -1e3
"""Score given to padded dates before the softmax (the reference's value; exp underflows to 0)."""


class DayOffsetEncoding(nn.Module):
    """Sinusoidal encoding of day offsets, `d` channels repeated `repeat` times (one copy per head)."""

    def __init__(self, d: int, period: float = 1000.0, repeat: int = 1) -> None:
        super().__init__()
        self.repeat = repeat
        exponent = 2 * torch.div(torch.arange(d), 2, rounding_mode="floor").float() / d
        # Not persistent: it is a pure function of (d, period), absent from reference checkpoints.
        self.register_buffer("denom", torch.pow(float(period), exponent), persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        """`(N, T)` day offsets -> `(N, T, d * repeat)`."""
        angles = positions.float()[:, :, None] / self.denom[None, None, :]
        table = torch.empty_like(angles)
        table[:, :, 0::2] = torch.sin(angles[:, :, 0::2])
        table[:, :, 1::2] = torch.cos(angles[:, :, 1::2])
        return table.repeat(1, 1, self.repeat)


class MaskedGroupNorm(nn.GroupNorm):
    """GroupNorm over `(N, C, T)` whose statistics skip the padded time steps.

    Identical to `nn.GroupNorm` when nothing is padded (the reference's case at batch size 1).
    `include_padding = True` (`train.reference_semantics`) is the reference's plain GroupNorm over
    every date, padded ones included, so that an item's output depends on its batch's padding.
    """

    include_padding = False

    def forward(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if self.include_padding or pad_mask is None or not bool(pad_mask.any()):
            return super().forward(x)
        n, c, t = x.shape
        dtype = x.dtype
        valid = (~pad_mask).float()[:, None, None, :]  # N x 1 x 1 x T
        # Statistics in float32, as autocast runs nn.GroupNorm.
        grouped = x.float().reshape(n, self.num_groups, c // self.num_groups, t)
        count = valid.sum(dim=-1, keepdim=True).clamp_min(1) * (c // self.num_groups)
        mean = (grouped * valid).sum(dim=(-2, -1), keepdim=True) / count
        var = (((grouped - mean) ** 2) * valid).sum(dim=(-2, -1), keepdim=True) / count
        out = ((grouped - mean) / torch.sqrt(var + self.eps)).reshape(n, c, t)
        if self.affine:
            out = out * self.weight.float()[None, :, None] + self.bias.float()[None, :, None]
        return out.to(dtype)


class GroupQueryAttention(nn.Module):
    """Multi-head attention with one learnt query per head over channel-grouped values."""

    def __init__(self, n_head: int, d_k: int, d_in: int, attn_dropout: float = 0.1) -> None:
        super().__init__()
        self.n_head, self.d_k, self.d_in = n_head, d_k, d_in
        self.Q = nn.Parameter(torch.zeros(n_head, d_k))
        nn.init.normal_(self.Q, mean=0.0, std=math.sqrt(2.0 / d_k))
        self.fc1_k = nn.Linear(d_in, n_head * d_k)
        nn.init.normal_(self.fc1_k.weight, mean=0.0, std=math.sqrt(2.0 / d_k))
        self.dropout = nn.Dropout(attn_dropout)

    def forward(self, v: Tensor, pad_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """`v`: `(N, T, d_in)`; returns head outputs `(n_head, N, d_in / n_head)`, weights `(n_head, N, T)`."""
        n, t, _ = v.shape
        keys = self.fc1_k(v).view(n, t, self.n_head, self.d_k).permute(2, 0, 1, 3)  # h x N x T x d_k
        scores = torch.einsum("hd,hntd->hnt", self.Q, keys) / math.sqrt(self.d_k)
        if pad_mask is not None:
            scores = scores.masked_fill(pad_mask[None], MASKED_SCORE)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        values = v.view(n, t, self.n_head, self.d_in // self.n_head).permute(2, 0, 1, 3)  # h x N x T x dv
        out = torch.einsum("hnt,hntd->hnd", weights, values)
        return out, weights


class LTAE2d(nn.Module):
    """L-TAE applied pixel-wise to a `(B, T, C, H, W)` series -> `(B, mlp[-1], H, W)` + attention."""

    def __init__(
        self,
        in_channels: int,
        n_head: int,
        d_k: int,
        mlp: list[int],
        d_model: int | None,
        dropout: float = 0.2,
        period: float = 1000.0,
    ) -> None:
        super().__init__()
        self.n_head = n_head
        self.d_model = d_model if d_model is not None else in_channels
        self.inconv = nn.Conv1d(in_channels, d_model, 1) if d_model is not None else None
        if mlp[0] != self.d_model:
            raise ValueError(f"L-TAE mlp must start at d_model={self.d_model}, got {mlp}")
        self.positional_encoder = DayOffsetEncoding(self.d_model // n_head, period=period, repeat=n_head)
        self.attention_heads = GroupQueryAttention(n_head=n_head, d_k=d_k, d_in=self.d_model)
        self.in_norm = MaskedGroupNorm(num_groups=n_head, num_channels=in_channels)
        self.out_norm = nn.GroupNorm(num_groups=n_head, num_channels=mlp[-1])
        layers: list[nn.Module] = []
        for a, b in zip(mlp[:-1], mlp[1:]):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, positions: Tensor, pad_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """`x` `(B, T, C, H, W)`, `positions` `(B, T)` day offsets, `pad_mask` `(B, T)` True = padded.

        Returns the encoded map `(B, C_out, H, W)` and the attention `(n_head, B, T, H, W)`.
        """
        b, t, c, h, w = x.shape
        per_pixel = lambda m: m[:, None, None, :].expand(b, h, w, t).reshape(b * h * w, t)  # noqa: E731
        mask = per_pixel(pad_mask) if pad_mask is not None else None
        out = x.permute(0, 3, 4, 2, 1).reshape(b * h * w, c, t)  # N x C x T
        out = self.in_norm(out, mask)
        if self.inconv is not None:
            out = self.inconv(out)
        out = out.transpose(1, 2)  # N x T x d_model
        out = out + self.positional_encoder(per_pixel(positions))
        heads, attn = self.attention_heads(out, mask)
        out = heads.permute(1, 0, 2).reshape(b * h * w, self.d_model)  # heads concatenated
        out = self.out_norm(self.dropout(self.mlp(out)))
        out = out.view(b, h, w, -1).permute(0, 3, 1, 2)
        attn = attn.view(self.n_head, b, h, w, t).permute(0, 1, 4, 2, 3)
        return out, attn


def resize_attention(attn: Tensor, size: tuple[int, int]) -> Tensor:
    """Bring `(n_head, B, T, h, w)` attention to a skip map's size (bilinear up, average down)."""
    n_head, b, t, h, w = attn.shape
    if (h, w) == tuple(size):
        return attn
    flat = attn.reshape(n_head * b, t, h, w)
    if size[0] > h:
        flat = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    else:
        flat = F.avg_pool2d(flat, kernel_size=w // size[1])
    return flat.view(n_head, b, t, *flat.shape[-2:])
