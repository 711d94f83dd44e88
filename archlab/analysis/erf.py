"""The effective receptive field (Luo, Li, Urtasun & Zemel, "Understanding the
Effective Receptive Field in Deep Convolutional Neural Networks", NeurIPS 2016).

The ERF of a node is the map ``E[|d y / d x|]``: the gradient of one central
output unit ``y`` (summed over the node's channels) with respect to the input
``x``, its magnitude summed over the input channels and averaged over random
inputs ``x ~ N(0, 1)``, with randomly initialised weights (or given ones). It is
roughly Gaussian and fills only part of the theoretical field.

It is summarised as in RepLKNet's ``erf/analyze_erf.py`` (Ding et al., CVPR
2022): for a fraction ``t`` of the total gradient mass, the side of the smallest
square centred on the unit's field centre that holds at least ``t`` of it (odd
sides 1, 3, 5, ...; the square is clipped to the image). RepLKNet centres on the
image centre and keeps ``relu(grad)`` of ``relu(y)``; this module follows Luo et
al. (``|grad|`` of ``y``) and centres on the theoretical field centre of the unit,
which is the same point for a symmetric network up to half a pixel.

:func:`archlab.report.erf.write_erf_png` draws the map (matplotlib), with the
squares, the theoretical field and the image centre.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from archlab.analysis.receptive_field import RF, receptive_fields
from archlab.errors import ArchlabError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from archlab.graph import Graph

FRACTIONS = (0.2, 0.5, 0.95)


@dataclass(frozen=True)
class ERF:
    """An effective receptive field.

    Fields:
        node: the node whose unit was differentiated.
        grad: (H, W) float64 array, mean over samples of ``|d y / d x|`` summed
            over input channels.
        unit: the output unit ``(i, j)`` (``(H_out // 2, W_out // 2)``).
        centre: pixel ``(row, col)`` the squares are centred on: the unit's
            theoretical field centre rounded to a pixel and clipped to the image.
        squares: fraction of gradient mass -> side (pixels) of the smallest centred
            square holding it.
        samples: number of random inputs averaged.
        theory: the node's theoretical :class:`RF` at this input size.
    """

    node: str
    grad: Any
    unit: tuple[int, int]
    centre: tuple[int, int]
    squares: dict[float, int]
    samples: int
    theory: RF

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.grad.shape)  # type: ignore[return-value]

    def _square_pixels(self, fraction: float) -> int:
        """Pixels of the centred square for ``fraction``, clipped to the image."""
        half = self.squares[fraction] // 2
        (h, w), (ci, cj) = self.input_size, self.centre
        return (min(h - 1, ci + half) - max(0, ci - half) + 1) * (min(w - 1, cj + half) - max(0, cj - half) + 1)

    @property
    def theory_pixels(self) -> tuple[int, int]:
        """Rows and columns of the theoretical field of :attr:`unit` inside the
        image (the whole image when the field is global)."""
        (t, b), (l, r) = self.theory.pixel_box(*self.unit)
        return max(0, b - t + 1), max(0, r - l + 1)

    def area_ratio(self, fraction: float) -> float:
        """Area of the square for ``fraction`` (clipped to the image) over the
        *image's* area: RepLKNet's "high-contribution area ratio"."""
        h, w = self.input_size
        return self._square_pixels(fraction) / (h * w)

    def theory_ratio(self, fraction: float) -> float:
        """Area of the square for ``fraction`` over the area of the unit's
        theoretical field, both clipped to the image: the share of the pixels
        that can influence the unit that holds ``fraction`` of the gradient."""
        th, tw = self.theory_pixels
        return self._square_pixels(fraction) / (th * tw)

    def report(self) -> str:
        """A few lines: the theoretical field, then per fraction the square's side
        and its area as a share of the theoretical field (in the image) and of
        the image."""
        trf = self.theory
        th, tw = self.theory_pixels
        lines = [f"{self.node}: unit {self.unit}, input {self.input_size[0]}x{self.input_size[1]}, "
                 f"{self.samples} random inputs"]
        lines.append(f"  theoretical RF   {trf}   ({th}x{tw} px in the image, coverage {trf.coverage:.0%})")
        for f, side in self.squares.items():
            lines.append(f"  ERF {f:>4.0%} mass   {side} px square: {self.theory_ratio(f):.1%} of the theoretical "
                         f"field's area in the image, {self.area_ratio(f):.1%} of the image's")
        return "\n".join(lines)


def default_node(graph: Graph) -> str:
    """The last node (topological order) with a spatial map larger than 1x1 that
    is not an adaptive pooling: the feature map before a classifier's pooling head
    (VGG's ``avgpool`` to 7x7 only resizes), or a dense predictor's output."""
    if any(n.shape is None for n in graph):
        graph.infer_shapes()
    for n in reversed(graph.topo_order()):
        if len(n.shape) == 3 and n.shape[1:] != (1, 1) and n.op not in ("input", "adaptive_avg_pool2d"):
            return n.name
    raise ArchlabError(f"graph {graph.name} has no node with a spatial output larger than 1x1")


def centred_squares(grad: np.ndarray, centre: tuple[int, int], fractions: Sequence[float] = FRACTIONS) -> dict[float, int]:
    """For each fraction, the side of the smallest odd square centred on ``centre``
    (clipped to the map) holding at least that fraction of ``grad``'s sum."""
    import numpy as np

    h, w = grad.shape
    total = float(grad.sum())
    if total <= 0:
        raise ArchlabError("the gradient map is zero everywhere: the unit does not depend on the input")
    cum = np.zeros((h + 1, w + 1))
    cum[1:, 1:] = grad.cumsum(0).cumsum(1)
    ci, cj = centre
    out: dict[float, int] = {}
    pending = sorted(fractions)
    r = 0
    while pending:
        t, b = max(0, ci - r), min(h, ci + r + 1)
        left, right = max(0, cj - r), min(w, cj + r + 1)
        mass = cum[b, right] - cum[t, right] - cum[b, left] + cum[t, left]
        full = t == 0 and left == 0 and b == h and right == w
        while pending and (mass >= pending[0] * total * (1 - 1e-12) or full):
            out[pending.pop(0)] = 2 * r + 1
        r += 1
    return {f: out[f] for f in fractions}


def effective_receptive_field(
    graph: Graph,
    node: Optional[str] = None,
    *,
    samples: int = 16,
    state_dict: Optional[Mapping[str, Any]] = None,
    seed: int = 0,
    fractions: Sequence[float] = FRACTIONS,
    batch: int = 4,
    double: bool = False,
    resample_weights: bool = True,
) -> ERF:
    """Compute the ERF of ``node`` at the graph's input size.

    Args:
        graph: a graph with one image input (not modified).
        node: the node to differentiate; default :func:`default_node`.
        samples: number of ``N(0, 1)`` inputs averaged.
        state_dict: weights for the graph (keys of the nodes up to ``node`` are
            used); default: PyTorch's random initialisation, seeded by ``seed``.
            Batch norm runs in eval mode (running statistics).
        seed: seeds the weights and the inputs.
        fractions: the gradient-mass fractions to summarise.
        batch: inputs per forward/backward pass.
        double: compute in float64.
        resample_weights: without ``state_dict``, draw fresh random weights for
            every batch, so the map is the expectation over weights and inputs (as
            in Luo et al.'s analysis) rather than a property of one draw.

    Returns:
        An :class:`ERF`.

    Raises:
        ArchlabError: an unknown node, weights that do not fit, or a unit that does
            not depend on the input.
    """
    import torch

    from archlab.analysis.rf_oracle import ancestors_graph
    from archlab.torchio import to_module
    from archlab.torchio.compile import load_weights

    node = node or default_node(graph)
    sub = ancestors_graph(graph, node)
    theory = receptive_fields(sub)[node]
    torch.manual_seed(seed)
    module = to_module(sub)
    if state_dict is not None:
        own = module.state_dict()
        load_weights(module, {k: state_dict[k] for k in own if k in state_dict}, graph_name=graph.name)
    dtype = torch.float64 if double else torch.float32
    module = module.to(dtype).eval()
    in_shape = sub.input_nodes[0].shape
    out_shape = sub[node].shape
    unit = (out_shape[1] // 2, out_shape[2] // 2) if len(out_shape) == 3 else (0, 0)
    gen = torch.Generator().manual_seed(seed)
    acc = torch.zeros(in_shape[1:], dtype=torch.float64)
    done = 0
    while done < samples:
        n = min(batch, samples - done)
        if done and state_dict is None and resample_weights:
            with torch.no_grad():
                for m in module.modules():
                    if m is not module and hasattr(m, "reset_parameters"):
                        m.reset_parameters()
        x = torch.randn((n, *in_shape), generator=gen, dtype=dtype).requires_grad_(True)
        y = module(x)
        target = y[:, :, unit[0], unit[1]].sum() if y.dim() == 4 else y.sum()
        (g,) = torch.autograd.grad(target, x)
        acc += g.abs().sum(1).sum(0).to(torch.float64)
        done += n
    grad = (acc / samples).numpy()
    h, w = grad.shape
    c = theory.center(*unit) if not (theory.is_global and theory.local_size is None) else ((h - 1) / 2, (w - 1) / 2)
    centre = (min(h - 1, max(0, math.floor(c[0] + 0.5))), min(w - 1, max(0, math.floor(c[1] + 0.5))))
    return ERF(node, grad, unit, centre, centred_squares(grad, centre, fractions), samples, theory)
