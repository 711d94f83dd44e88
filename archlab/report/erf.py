"""The ERF heatmap (``archlab erf --png``), drawn with matplotlib.

The map of :class:`~archlab.analysis.erf.ERF` is shown on input-pixel axes, on a
logarithmic colour scale over ``decades`` decades below its maximum (a colour
bar with ticks), with:

* every centred square the ERF lists (20 / 50 / 95 % of the gradient mass by
  default), each in its own colour, in the legend with its side, drawn just
  inside its pixels (equal squares a few points apart, so each shows);
* the unit's theoretical receptive field clipped to the image, dashed cyan just
  outside its pixels; when
  the field is larger than the image (or global) the legend says so;
* the image centre (a white ``+``) and the squares' centre (the unit's field
  centre, a small circle), which differ for a unit off the middle.

The caption states each square's area against the quantity it names: the
image's area and the theoretical field's area inside the image.
"""
from __future__ import annotations

from typing import Optional

SQUARE_COLOURS = ("#ffffff", "#7fff00", "#ff00ff", "#ffa500", "#00bfff")  # largest fraction first
THEORY_COLOUR = "#00ffff"
DPI = 110  # the PNG is the figure at this resolution: 792 x 836 px
GAP = 3.0  # points between the outlines of equal squares
SQUARE_LW, THEORY_LW = 1.8, 2.0  # points


def square_box(erf, fraction: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) pixel rows/columns of the centred square for ``fraction``, clipped to the image."""
    h, w = erf.input_size
    half = erf.squares[fraction] // 2
    ci, cj = erf.centre
    return max(0, ci - half), min(h - 1, ci + half), max(0, cj - half), min(w - 1, cj + half)


def square_colours(erf) -> dict[float, str]:
    """The colour of each fraction's square (largest fraction first, as drawn)."""
    return {f: SQUARE_COLOURS[k % len(SQUARE_COLOURS)] for k, f in enumerate(sorted(erf.squares, reverse=True))}


def erf_figure(erf, *, decades: float = 3.0, title: Optional[str] = None):
    """The heatmap as a matplotlib ``Figure`` (see the module docstring)."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm, Normalize

    h, w = erf.input_size
    grad = np.asarray(erf.grad, dtype=np.float64)
    peak = float(grad.max()) if grad.size else 0.0
    fig, ax = plt.subplots(figsize=(7.2, 7.6), dpi=DPI)
    if decades > 0 and peak > 0:
        norm = LogNorm(vmin=peak * 10.0 ** -decades, vmax=peak, clip=True)
        shown = np.maximum(grad, peak * 10.0 ** -decades)
    else:
        norm, shown = Normalize(vmin=0.0, vmax=peak or 1.0), grad
    im = ax.imshow(shown, cmap="inferno", norm=norm, interpolation="nearest", origin="upper",
                   extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("E|d unit / d input| (mean over random inputs)")

    fig.subplots_adjust(bottom=0.33, top=0.94)
    ax.apply_aspect()  # the image's square pixels fix the axes' final width
    colours = square_colours(erf)
    per_pt = w / (ax.get_position(original=False).width * fig.get_figwidth() * 72)  # data px per point
    drawn: list[tuple[int, int, int, int]] = []
    for f in sorted(erf.squares, reverse=True):
        box = square_box(erf, f)
        # just inside its pixels (on the map even at the image's border), and a square equal to one
        # drawn already GAP points further in, so every square shows
        _rect(ax, box, -(SQUARE_LW / 2 + GAP * drawn.count(box)) * per_pt, colours[f], SQUARE_LW, "-", 5,
              f"{f:.0%} of the mass: {erf.squares[f]} px square")
        drawn.append(box)
    (t, b), (left, r) = erf.theory.pixel_box(*erf.unit)
    box = (max(t, 0), min(b, h - 1), max(left, 0), min(r, w - 1))
    th, tw = erf.theory_pixels
    if erf.theory.is_global:
        what = "theoretical field: global (the whole image)"
    else:
        size = "x".join(f"{float(x):g}" for x in erf.theory.size)
        larger = float(erf.theory.size[0]) > h or float(erf.theory.size[1]) > w
        what = f"theoretical field {size} px" + (f", larger than the {h}x{w} image ({th}x{tw} inside)" if larger else "")
    _rect(ax, box, THEORY_LW / 2 * per_pt, THEORY_COLOUR, THEORY_LW, (0, (4, 2)), 4, what)  # just outside its pixels
    ax.plot([(w - 1) / 2], [(h - 1) / 2], "+", color="white", ms=14, mew=1.6, zorder=9, label="image centre")
    ax.plot([erf.centre[1]], [erf.centre[0]], "o", mfc="none", mec="white", ms=6, mew=1.0, zorder=9,
            label=f"unit {erf.unit}'s field centre (squares' centre)")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xlabel("input column (px)")
    ax.set_ylabel("input row (px)")
    ax.set_title(title or f"ERF of {erf.node} (N={erf.samples})", fontsize=11)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), fontsize=8, ncol=1, frameon=True,
              facecolor="#3a3a3a", edgecolor="#3a3a3a", labelcolor="white")  # dark: the white marks show
    caption = "; ".join(f"{f:.0%} square = {erf.area_ratio(f):.1%} of the image's area, "
                        f"{erf.theory_ratio(f):.1%} of the theoretical field's area in the image"
                        for f in sorted(erf.squares))
    fig.text(0.5, 0.012, _wrap(caption, 120), ha="center", va="bottom", fontsize=7.5)
    return fig


def _rect(ax, box, grow: float, colour: str, lw: float, ls, zorder: int, label: str) -> None:
    """Outline pixel rows/columns ``box`` = (top, bottom, left, right), ``grow`` data px outside (< 0: inside);
    drawn unclipped, so a line on the image's border shows whole."""
    from matplotlib.patches import Rectangle

    t, b, left, r = box
    ax.add_patch(Rectangle((left - 0.5 - grow, t - 0.5 - grow), r - left + 1 + 2 * grow, b - t + 1 + 2 * grow,
                           fill=False, lw=lw, ls=ls, zorder=zorder, edgecolor=colour, clip_on=False, label=label))


def write_erf_png(erf, path: str, *, decades: float = 3.0, title: Optional[str] = None) -> tuple[int, int]:
    """Write :func:`erf_figure` as a PNG (the figure's own pixels, :data:`DPI`) and return its ``(width, height)``."""
    import matplotlib.pyplot as plt

    import matplotlib

    fig = erf_figure(erf, decades=decades, title=title)
    with matplotlib.rc_context({"savefig.bbox": None}):  # a user's "tight" would change the size returned
        fig.savefig(path, dpi=fig.dpi)
    size = fig.canvas.get_width_height()
    plt.close(fig)
    return size


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) if len(text) > width else text


__all__ = ["erf_figure", "write_erf_png", "square_box", "square_colours"]
