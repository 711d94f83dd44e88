"""Vectorised drawing of shapes, clutter and backgrounds for :mod:`archlab.train.data.embedded`.

Everything random is drawn on the CPU from one ``torch.Generator`` (so a seed
gives the same numbers on every machine); only the per-pixel arithmetic runs on
``device``. Coordinates are pixels, ``(x, y) = (column + 1/2, row + 1/2)``.

A shape lives in normalised coordinates ``(u, v)``: the object's frame rotated
by its angle and divided by its *radius* ``r``, the radius of the circle
circumscribing the shape, so every shape lies inside ``u**2 + v**2 <= 1`` and an
object's *scale* (its circumscribed diameter ``2 r``) bounds its extent in every
direction. Shapes are chosen so that their insides look alike (one fill per
object, drawn from the same distribution for every class) and differ in
outline and extent; several have thin parts (ring, cross, star, crescent, bar)
whose pixels a coarse output grid loses.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

Mask = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_TRI_NORMALS = [(math.cos(a), math.sin(a)) for a in (math.pi / 2 + 2 * math.pi * k / 3 for k in range(3))]
_CROSS_W = 0.3  # half-width of a cross arm, in radii
_CROSS_A = math.sqrt(1 - _CROSS_W ** 2)  # half-length: the arm's corners touch the unit circle


def _disc(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u * u + v * v <= 1.0


def _square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.maximum(u.abs(), v.abs()) <= math.sqrt(0.5)


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # equilateral, circumradius 1: three half-planes at the inradius 1/2
    inside = None
    for nx, ny in _TRI_NORMALS:
        half = -(u * nx + v * ny) <= 0.5
        inside = half if inside is None else inside & half
    return inside


def _cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    au, av = u.abs(), v.abs()
    return ((au <= _CROSS_W) & (av <= _CROSS_A)) | ((av <= _CROSS_W) & (au <= _CROSS_A))


def _ring(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    rho2 = u * u + v * v
    return (rho2 <= 1.0) & (rho2 >= 0.55 ** 2)


def _star(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # five lobes: rho <= 0.5 + 0.5 cos(5 phi), written without atan2 via cos(5 phi) = Re((u + iv)^5) / rho^5
    rho2 = u * u + v * v
    rho = rho2.sqrt().clamp_min(1e-6)
    c = u / rho
    c2 = c * c
    cos5 = c * (16 * c2 * c2 - 20 * c2 + 5)  # Chebyshev T5(cos phi) = cos(5 phi); no pow: same on every device
    return rho <= 0.45 + 0.55 * cos5.clamp(min=0.0).square()


def _crescent(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + v * v > 0.8 ** 2)


def _bar(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u.abs() <= 0.96) & (v.abs() <= 0.25)


#: the shape vocabulary, in the order a task with ``classes=k`` uses its first k
SHAPES: dict[str, Mask] = {
    "disc": _disc, "square": _square, "triangle": _triangle, "cross": _cross,
    "ring": _ring, "star": _star, "crescent": _crescent, "bar": _bar,
}
SHAPE_NAMES = tuple(SHAPES)


def derive_seed(seed: int, stream: int) -> int:
    """A 63-bit seed for stream ``stream`` of ``seed`` (train, val, ... draw apart)."""
    return (int(seed) * 0x9E3779B97F4A7C15 + int(stream) * 0xBF58476D1CE4E5B9 + 1) % (2 ** 63)


def uniform(gen: torch.Generator, shape: tuple[int, ...], lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """``U(lo, hi)`` float32 on the CPU from ``gen``."""
    return torch.rand(shape, generator=gen) * (hi - lo) + lo


def object_patches(kinds: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, radius: torch.Tensor,
                   angle: torch.Tensor, *, window: int, size: tuple[int, int], device: torch.device,
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Objects drawn in ``window x window`` patches: only pixels near an object are computed.

    Args:
        kinds: shape indices into :data:`SHAPE_NAMES`, any shape ``B``.
        cx, cy, radius, angle: centre (pixels), circumradius (pixels) and rotation
            (radians), shape ``B``; every object must lie inside the image and
            ``window >= 2 * radius + 2`` (or the whole image side).
        window: the patch side (at most ``min(H, W)``).

    Returns:
        ``(mask, oy, ox)``: boolean ``(*B, window, window)`` and the patch origins
        (row, column; int64 ``B``) in the image.
    """
    h, w = size
    ox = (cx - window / 2).floor().long().clamp(0, w - window)
    oy = (cy - window / 2).floor().long().clamp(0, h - window)
    view = tuple(kinds.shape) + (1, 1)
    inv = 1.0 / radius
    # cos and sin on the CPU: the same numbers on every device
    c, s = (angle.cos() * inv).to(device).view(view), (angle.sin() * inv).to(device).view(view)
    step = torch.arange(window, dtype=torch.float32, device=device) + 0.5
    dx = (ox.to(device).view(view) - cx.to(device).view(view)) + step.view(1, window)  # (*B, 1, D)
    dy = (oy.to(device).view(view) - cy.to(device).view(view)) + step.view(window, 1)  # (*B, D, 1)
    mask = torch.zeros(tuple(kinds.shape) + (window, window), dtype=torch.bool, device=device)
    kinds_d = kinds.to(device)
    for k in torch.unique(kinds).tolist():
        sel = kinds_d == k  # each shape only where it is drawn
        dxs, dys, cs, ss = dx[sel], dy[sel], c[sel], s[sel]
        u = dxs * cs + dys * ss
        v = dys * cs - dxs * ss
        mask[sel] = SHAPES[SHAPE_NAMES[k]](u, v)
    return mask, oy, ox


def segment_masks(x0: torch.Tensor, y0: torch.Tensor, x1: torch.Tensor, y1: torch.Tensor,
                  half_width: torch.Tensor, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Boolean masks ``(*x0.shape, H, W)`` of line segments ``(x0, y0)-(x1, y1)``:
    pixels within ``half_width`` of the line and between the end points' normals."""
    h, w = size
    view = tuple(x0.shape) + (1, 1)
    ex, ey = x1 - x0, y1 - y0
    length = (ex * ex + ey * ey).sqrt().clamp_min(1e-3)
    nx, ny = -ey / length, ex / length
    tx, ty = ex / length ** 2, ey / length ** 2
    x = (torch.arange(w, dtype=torch.float32) + 0.5).view(1, w)
    y = (torch.arange(h, dtype=torch.float32) + 0.5).view(h, 1)
    # distance from the line and position along it (0..1), each as row term + column term
    d_col, d_row = (x - x0.view(view)) * nx.view(view), (y - y0.view(view)) * ny.view(view)
    t_col, t_row = (x - x0.view(view)) * tx.view(view) - 0.5, (y - y0.view(view)) * ty.view(view)
    near = (d_col.to(device) + d_row.to(device)).abs_() <= half_width.to(device).view(view)
    return near & ((t_col.to(device) + t_row.to(device)).abs_() <= 0.5)


def contrasting_colours(gen: torch.Generator, under: torch.Tensor, *, min_contrast: float) -> torch.Tensor:
    """Random colours in [0, 1], one per row of ``under`` (``(..., C)`` colours they are
    painted over), each at least ``min_contrast`` away from ``under`` in some channel."""
    colour = torch.rand(under.shape, generator=gen)
    flat = (colour - under).abs().amax(dim=-1, keepdim=True) < min_contrast
    # too close: push every channel away from the colour underneath, to the farther side
    pushed = torch.where(under > 0.5, under - min_contrast - colour * (under - min_contrast).clamp_min(0.0),
                         under + min_contrast + colour * (1.0 - under - min_contrast).clamp_min(0.0))
    return torch.where(flat, pushed.clamp(0.0, 1.0), colour)
