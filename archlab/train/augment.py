"""Normalisation and augmentation of whole batches, on the device that trains.

The data stay resident as uint8; each step gathers a batch, turns it into
normalised floats and augments it with one affine resampling for the whole
batch (``affine_grid`` + ``grid_sample``): a random zoom (scale-crop), a
translation and a horizontal flip per image. Masks are resampled with nearest
neighbours (labels are never interpolated) and pixels that fall outside the
source image become the ignore index, so padding counts in neither the loss nor
the metrics. One kernel launch per batch instead of per-image Python transforms
is what lets a GPU train at full speed (airbench does the same).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class Normalizer:
    """``(u8 / 255 - mean) / std`` per channel as one multiply-add, in float32."""

    def __init__(self, mean, std, device) -> None:
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    def __call__(self, images_u8: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, images_u8.float(), self.scale)


def _affine(n: int, scale: tuple[float, float], max_shift: float | None, flip: bool,
            generator: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image, the axis-aligned output->input map ``x_in = sx * x_out + tx``,
    ``y_in = a * y_out + ty`` in normalised coordinates: a zoom ``1/a`` (log-uniform
    in ``scale``), a random shift that keeps the crop inside the image (zoom in)
    or the image inside the output (zoom out), and a flip of x (``sx = -a``)
    with probability 1/2. ``max_shift`` (normalised units) bounds the shift
    instead, for the classification translate. Returns ``sx, tx, a, ty``, each ``(n,)``."""
    u = torch.rand(n, 4, generator=generator, device=device)
    lo, hi = math.log(scale[0]), math.log(scale[1])
    a = torch.exp(-(lo + (hi - lo) * u[:, 0]))  # source extent per output extent (1/zoom)
    room = (1 - a).abs() if max_shift is None else torch.full_like(a, max_shift)
    tx, ty = (2 * u[:, 1] - 1) * room, (2 * u[:, 2] - 1) * room
    sx = torch.where(u[:, 3] < 0.5, -a, a) if flip else a
    return sx, tx, a, ty


def _coords(n: int, size: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Normalised source coordinates ``(n, size)`` of the output pixel centres (align_corners=False)."""
    base = (torch.arange(size, device=s.device, dtype=torch.float32) * 2 + 1) / size - 1
    return s[:, None] * base[None, :] + t[:, None]


def _nearest(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Index of the source pixel nearest each normalised coordinate; -1 outside."""
    i = torch.floor(((coord + 1) * size - 1) / 2 + 0.5).long()
    return torch.where((i >= 0) & (i < size), i, -1)


def _resample(x: torch.Tensor, sx, tx, sy, ty, mode: str) -> torch.Tensor:
    n, _, h, w = x.shape
    gx = _coords(n, w, sx, tx)[:, None, :].expand(n, h, w)
    gy = _coords(n, h, sy, ty)[:, :, None].expand(n, h, w)
    return F.grid_sample(x, torch.stack([gx, gy], -1), mode=mode, padding_mode="zeros", align_corners=False)


def augment_segmentation(x: torch.Tensor, masks_u8: torch.Tensor, *, scale: tuple[float, float],
                         ignore_index: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random scale-crop and flip of normalised images ``x`` ``(N, C, H, W)``
    and their uint8 masks ``(N, H, W)``; returns float images and int64 masks.
    Outside the source: images 0 (the mean), masks ``ignore_index``. The map is
    axis-aligned, so a mask's nearest-neighbour resampling is a gather of rows
    and columns (exact labels, no float round trip)."""
    n, _, h, w = x.shape
    sx, tx, a, ty = _affine(n, scale, None, True, generator, x.device)
    out = _resample(x, sx, tx, a, ty, "bilinear")
    ix, iy = _nearest(_coords(n, w, sx, tx), w), _nearest(_coords(n, h, a, ty), h)
    rows = masks_u8.gather(1, iy.clamp(min=0)[:, :, None].expand(n, h, masks_u8.shape[2]))
    m = rows.gather(2, ix.clamp(min=0)[:, None, :].expand(n, h, w)).long()
    outside = (iy < 0)[:, :, None] | (ix < 0)[:, None, :]
    return out, m.masked_fill_(outside, ignore_index)


def augment_classification(x: torch.Tensor, *, max_shift_px: int, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``max_shift_px`` pixels (zero padding, as
    CIFAR's pad-and-crop) and horizontal flip of normalised images ``x``."""
    n, _, h, w = x.shape
    sx, tx, a, ty = _affine(n, (1.0, 1.0), 2.0 * max_shift_px / max(h, w), True, generator, x.device)
    # whole-pixel shifts, so nearest sampling is exact (and cheaper than bilinear)
    tx, ty = torch.round(tx * w / 2) * 2 / w, torch.round(ty * h / 2) * 2 / h
    return _resample(x, sx, tx, a, ty, "nearest")
