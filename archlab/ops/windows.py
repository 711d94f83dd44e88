"""Field rules of resampling ops in closed form: what each output of a transposed
convolution, an unpooling, a nearest or linear resize reads, fitted to a regular
window (:meth:`Window.from_offsets`) in O(1) whatever the strides and sizes, so
the receptive-field pass never loops over a stride or a size."""
from __future__ import annotations

import math
import struct
from fractions import Fraction
from math import gcd

from archlab.ops.rules import Window


def spread_window(kernel: int, stride: int, padding: int, dilation: int = 1) -> Window:
    """Field rule of an op that spreads input unit ``i`` over the outputs
    ``i*s - p + t*d`` (``t < k``): transposed convolution, and max unpooling
    (the pool's windows, any of whose positions may hold the maximum).

    Output ``o`` reads the inputs ``i`` with ``i*s = o + p - t*d``: the pattern
    repeats every ``s`` outputs, so one period, fitted by :meth:`Window.fit`,
    gives the exact rule. As for a padded conv, the field is unclipped: outputs
    at the border count inputs beyond it. Examples: k2 s2 (U-Net's up-conv,
    2x2 unpooling) reads ``o // 2``: kernel 1, centred 1/4 input step early,
    slack 1/4; k4 s2 p1 reads 2 inputs, slack 1/4; k3 s2 alternately 2 and 1,
    slack 1/2; k1 s2 (bed of nails) reads ``o / 2`` at even ``o`` and nothing at
    odd ``o``: exact.

    Closed form, O(1) whatever the sizes: with ``g = gcd(d, s)``, the outputs
    that read anything have ``t*d = o + p (mod s)``; their smallest solution
    ``t0`` runs over ``0 .. M = min(s/g - 1, k - 1)`` along a period, the last
    input read is ``(o + p - t0*d) / s`` and the first ``(k - 1 - ((k - 1 - t0)
    mod s/g)) * d / s`` before it (:meth:`Window.from_offsets`).
    """
    g = gcd(dilation, stride)
    period, q = stride // g, kernel - 1
    m = min(period - 1, q)
    width = (q // period) * (dilation // g) + 1  # inputs the widest output spans
    half = Fraction(width - 1, 2)
    # Offsets of the first / last input read from o / s, over t0 in 0..m.
    first = (Fraction(padding - dilation * q, stride) + half, Fraction(padding - dilation * (q - m), stride) + half)
    last = (Fraction(padding - m * dilation, stride) - half, Fraction(padding, stride) - half)
    return Window.from_offsets(width, Fraction(1, stride), min(first[0], last[0]), max(first[1], last[1]))


NEAREST_LISTED = 4096
"""Up to this many outputs per axis the nearest rule lists ATen's float32 reads
exactly; beyond, it bounds them in closed form (:func:`nearest_window`)."""


def nearest_window(size: int, out_size: int) -> Window:
    """Field rule of nearest resampling ``size -> out_size`` along one axis: the
    exact fit of :func:`nearest_indices` up to :data:`NEAREST_LISTED` outputs
    (and for equal sizes and 2x, which are exact in float32); beyond, O(1): output
    ``o`` reads ``floor(o * size / out_size)`` give or take the float32 error of
    ``o * scale`` (at most ``1 + 3 * size / 2**24`` whole steps), and that error
    is added to the slack."""
    stride = Fraction(size, out_size)
    if out_size <= NEAREST_LISTED or out_size in (size, 2 * size):
        if out_size == size:
            return Window(1, 1, 0, 0)
        if out_size == 2 * size:
            return linear_floor_window(size, 0, out_size)
        return Window.fit(stride, [(o, j, j) for o, j in enumerate(nearest_indices(size, out_size))])
    g = gcd(size, out_size)
    err = 1 + (3 * size >> 24)
    return Window.from_offsets(1, stride, Fraction(g - out_size, out_size) - err, Fraction(err))


def linear_floor_window(a: int, b: int, d: int) -> Window:
    """Field rule of an output ``o`` reading input ``floor((a*o + b) / d)`` (``a``
    >= 0, ``d`` > 0): kernel 1, stride ``a/d``; the fractional parts over a period
    are ``(b mod G) + G*m`` over ``d`` with ``G = gcd(a, d)``, so O(1)."""
    big_g = gcd(a, d)
    r0 = b % big_g
    c = Fraction(b, d)
    return Window.from_offsets(1, Fraction(a, d), c - Fraction(r0 + d - big_g, d), c - Fraction(r0, d))


def linear_window(a: int, b: int, d: int) -> Window:
    """Field rule of linear interpolation at ``x = (a*o + b) / d`` along one axis:
    output ``o`` reads ``floor(x)`` and ``ceil(x)`` (one input when ``x`` is
    whole). O(1) whatever the sizes: ``x - o*a/d`` is the constant ``b/d`` and the
    fractional parts of ``x`` over a period are ``(b mod G) + G*m`` over ``d``
    (``G = gcd(a, d)``, ``m = 0 .. d/G - 1``)."""
    big_g = gcd(a, d)
    r0 = b % big_g
    fmin, fmax = Fraction(r0, d), Fraction(r0 + d - big_g, d)
    kernel = 1 if fmax == 0 else 2
    half = Fraction(kernel - 1, 2)
    c = Fraction(b, d)
    if r0 == 0:  # some x are whole (one input, gap 0); the others' ceil gaps are 1 - f for f >= G/d
        gap_lo, gap_hi = Fraction(0), (1 - Fraction(big_g, d) if d > big_g else Fraction(0))
    else:
        gap_lo, gap_hi = 1 - fmax, 1 - fmin
    lo = min(c + half - fmax, c + gap_lo - half)
    hi = max(c + half - fmin, c + gap_hi - half)
    return Window.from_offsets(kernel, Fraction(a, d), lo, hi)


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def nearest_indices(size: int, out_size: int) -> list[int]:
    """The input index each output of ``F.interpolate(mode="nearest", size=...)``
    reads, as ATen computes it for float32 (``nearest_idx``): exact for equal
    sizes and 2x, else ``floor(o * scale)`` in float32 with ``scale =
    float(size) / out_size``, which is one below ``o * size // out_size`` where
    that is whole and the scale rounds down (2 -> 82: output 41 reads 0, not 1).
    float64 kernels round elsewhere, always inside the window fitted to these
    (checked for every size up to 69 -> 299)."""
    if out_size == size:
        return list(range(out_size))
    if out_size == 2 * size:
        return [o >> 1 for o in range(out_size)]
    scale = _f32(_f32(size) / out_size)
    return [min(math.floor(_f32(o * scale)), size - 1) for o in range(out_size)]


def adaptive_window(size: int, bins: int) -> Window:
    """Field rule of adaptive pooling of ``size`` inputs into ``bins`` along one
    axis: bin ``i`` reads ``floor(i*size/bins) .. ceil((i+1)*size/bins) - 1``.

    O(1) whatever the sizes: with ``G = gcd(size, bins)`` and ``r = size mod
    bins``, the remainders ``i*size mod bins`` run over ``0, G, .., bins - G``, so
    the widest bin spans ``(size + bins - r) / bins`` inputs when ``r == G`` and
    ``(size + 2*bins - r) / bins`` otherwise, and its first / last inputs lie
    within ``(bins - G) / bins`` of ``i*size/bins`` and ``(i+1)*size/bins - 1``
    (:meth:`Window.from_offsets`). Exact (slack 0) when ``bins`` divides ``size``.
    """
    if size % bins == 0:
        return Window(size // bins, size // bins, 0, 0)
    g, r = gcd(size, bins), size % bins
    kernel = (size + (bins - r if r == g else 2 * bins - r)) // bins
    half = Fraction(kernel - 1, 2)
    spread = Fraction(bins - g, bins)
    lo = min(half - spread, Fraction(size, bins) - 1 - half)
    hi = max(half, Fraction(size, bins) - 1 - half + spread)
    return Window.from_offsets(kernel, Fraction(size, bins), lo, hi)
