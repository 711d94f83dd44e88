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
            generator: torch.Generator, device) -> torch.Tensor:
    """``(n, 2, 3)`` output->input maps: zoom by ``s`` (log-uniform in ``scale``),
    a random shift that keeps the crop inside the image (zoom in) or the image
    inside the output (zoom out), and a flip of x with probability 1/2.
    ``max_shift`` (in normalised units) bounds the shift instead, for the
    classification translate."""
    u = torch.rand(n, 4, generator=generator, device=device)
    lo, hi = math.log(scale[0]), math.log(scale[1])
    a = torch.exp(-(lo + (hi - lo) * u[:, 0]))  # source extent per output extent (1/zoom)
    room = (1 - a).abs() if max_shift is None else torch.full_like(a, max_shift)
    tx, ty = (2 * u[:, 1] - 1) * room, (2 * u[:, 2] - 1) * room
    sx = torch.where(u[:, 3] < 0.5, -a, a) if flip else a
    zero = torch.zeros_like(a)
    return torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, a, ty], 1)], 1)


def augment_segmentation(x: torch.Tensor, masks_u8: torch.Tensor, *, scale: tuple[float, float],
                         ignore_index: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random scale-crop and flip of normalised images ``x`` ``(N, C, H, W)``
    and their uint8 masks ``(N, H, W)``; returns float images and int64 masks.
    Outside the source: images 0 (the mean), masks ``ignore_index``."""
    n, _, h, w = x.shape
    theta = _affine(n, scale, None, True, generator, x.device)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # +1 so that 0 marks "outside"; nearest sampling keeps the labels exact.
    m = F.grid_sample(masks_u8.unsqueeze(1).float() + 1, grid.to(torch.float32), mode="nearest",
                      padding_mode="zeros", align_corners=False).squeeze(1).long()
    return x, torch.where(m == 0, ignore_index, m - 1)


def augment_classification(x: torch.Tensor, *, max_shift_px: int, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``max_shift_px`` pixels (zero padding, as
    CIFAR's pad-and-crop) and horizontal flip of normalised images ``x``."""
    n, _, h, w = x.shape
    theta = _affine(n, (1.0, 1.0), 2.0 * max_shift_px / max(h, w), True, generator, x.device)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
