"""The autograd oracle for receptive fields: measure, with torch, which input
pixels one output unit depends on, and compare with the theoretical field of
:mod:`archlab.analysis.receptive_field`.

The graph up to the chosen node is rebuilt as a *linearised, positive* network
in which no input pixel's contribution can cancel or be cut off:

* activations (ReLU, ReLU6, hardswish, SiLU, ...) become the identity (they have
  zero-gradient regions); the gates of squeeze-and-excitation blocks (sigmoid,
  hardsigmoid) become sigmoids, whose gradient is positive everywhere and which
  keep ``x * gate`` bounded (an identity gate would square the activations);
* max pooling becomes average pooling of the same geometry (kernel, stride,
  padding, ceil_mode; ``count_include_pad`` only changes the divisor, never
  zeroes a real pixel's weight);
* every weight becomes ``|w| + mean|w|``, normalised to sum 1 per output unit, so
  each layer is a positive weighted average (nothing overflows or underflows in
  float64 even 200 layers deep); biases become 0;
* batch norm becomes a positive scale (running mean 0, running variance 1, weight
  ``|w| + eps``, bias 0), dropout is off (eval mode).

With an all-ones input every activation is then positive, so the gradient of
one output unit (summed over channels) is non-zero exactly on the input pixels
some path reaches: its bounding box is the theoretical field (clipped to the
image). After resampling (upsampling, transposed convs, unpooling) the grid of
fields is regular only on average; there each measured edge must lie within the
field's ``slack`` of the theoretical one. Max unpooling is measured as a
transposed convolution with its pool's kernel, stride, padding and dilation,
cropped or padded to the pool's input size: a unit may receive the maximum of
any window covering it.

By default the network is also *thinned*: the input gets 1 channel and every
conv/linear 1 output channel and no groups. Channel counts do not change the
field's geometry, and a groups=1 conv reads every channel, so the union over
channels (what the oracle measures) is unchanged; it makes even DenseNet-201 at
3900x3900 cheap. If that breaks the graph (a merge whose channel counts then
disagree, e.g. a gate multiplying a concat), every channel count and group
count is divided by their greatest common divisor instead, which keeps all
channel relations; failing that, the full-width graph is used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Optional

from archlab.analysis.receptive_field import RF, receptive_fields
from archlab.errors import ArchlabError
from archlab.graph import Graph
from archlab.ops import get_op
from archlab.ops.activation import Activation

if TYPE_CHECKING:  # pragma: no cover
    import torch

GATES = frozenset({"sigmoid", "hardsigmoid"})
"""Activations that gate a product (squeeze-and-excitation): the oracle makes
them sigmoids, never the identity, since ``x * identity(f(x))`` squares the
activations at every gate and over/underflows after a dozen blocks."""

PixelBox = tuple[tuple[int, int], tuple[int, int]]
"""Inclusive pixel index ranges ``((top, bottom), (left, right))``."""


@dataclass(frozen=True)
class OracleResult:
    """What the oracle measured for one output unit, beside the theory.

    Fields:
        node: the node measured.
        input_size: (H, W) of the input fed.
        unit: the output unit ``(i, j)`` back-propagated from (``(0, 0)`` for a
            node without spatial layout, where every output is summed).
        box: measured inclusive pixel ranges of non-zero input gradient, or
            ``None`` when the gradient is zero everywhere.
        expected: the theoretical field of ``unit`` clipped to the input
            (:meth:`RF.pixel_box`).
        theory: the theoretical :class:`RF` of the node at ``input_size``.
        thinned: whether a thinned network (1 channel, or channels divided by
            their common divisor) was used.
    """

    node: str
    input_size: tuple[int, int]
    unit: tuple[int, int]
    box: Optional[PixelBox]
    expected: PixelBox
    theory: RF
    thinned: bool

    @property
    def size(self) -> tuple[int, int]:
        """Measured field side per axis (0 when nothing was reached)."""
        if self.box is None:
            return (0, 0)
        return (self.box[0][1] - self.box[0][0] + 1, self.box[1][1] - self.box[1][0] + 1)

    @property
    def clipped(self) -> bool:
        """Whether the theoretical field of ``unit`` extends beyond the input."""
        if self.theory.is_global:
            return False
        return any(
            lo < 0 or hi > n - 1 for (lo, hi), n in zip(self.theory.box(*self.unit), self.input_size)
        )

    @property
    def ok(self) -> bool:
        """The measured box equals the theoretical one (position and size); for a
        field with ``slack`` (resampling upstream), each measured edge lies within
        ``slack`` of the theoretical edge (clipped to the input). A unit that reads
        nothing (bed-of-nails unpooling between the nails) agrees with an empty
        theoretical box."""
        if self.box is None and any(hi < lo for lo, hi in self.expected):
            return True
        if self.theory.exact or self.theory.is_global or self.box is None:
            return self.box == self.expected
        for (t, b), (lo, hi), n, slack in zip(self.box, self.theory.box(*self.unit), self.input_size, self.theory.slack):
            lo, hi = max(lo, Fraction(0)), min(hi, Fraction(n - 1))
            if abs(t - lo) > slack or abs(b - hi) > slack:
                return False
        return True

    def report(self) -> str:
        return (
            f"{self.node}: unit {self.unit} at input {self.input_size[0]}x{self.input_size[1]}"
            f"{' (thinned)' if self.thinned else ''}: measured box {self.box} size {self.size}, "
            f"theory {self.theory} -> box {self.expected}{' (clipped)' if self.clipped else ''}"
            f"{'' if self.theory.exact or self.theory.is_global else ' (within slack)'}: "
            f"{'agree' if self.ok else 'DISAGREE'}"
        )


def ancestors_graph(
    graph: Graph,
    node: str,
    *,
    input_shape: Optional[tuple[int, int, int]] = None,
    linearise: bool = False,
    thin: bool = False,
    divide_channels: int = 1,
    drop_global: bool = False,
) -> Graph:
    """A new graph holding ``node`` and its ancestors, with ``node`` as output ``out``.

    Args:
        input_shape: replaces the input's (C, H, W).
        linearise: activations become ``identity`` (gates ``sigmoid``), max pooling
            average pooling, max unpooling a transposed conv of the pool's geometry
            to the pool's input size (node ``<name>.spread``, then a ``crop2d`` when
            a ceil-mode pool's last window overhangs).
        thin: 1 input channel, 1 output channel and no groups for every conv and
            linear (``out_channels``/``out_features``/``groups`` attributes).
        divide_channels: divide those attributes by this factor instead (they
            must be multiples of it), which keeps every channel relation.
        drop_global: at a ``mul``, ``add`` or ``concat``, inputs whose field is
            global without spatial layout (a squeeze-and-excitation gate, an
            image-pooling branch upsampled back) are left out, with their
            branches: what remains are the spatial paths (``RF.local_size``).

    Raises:
        ArchlabError: when the graph does not fit (e.g. an input too small), or a
            max pooling is dilated (average pooling has no dilation).
    """
    if any(n.shape is None for n in graph):
        graph.infer_shapes()
    gated = _global_inputs(graph) if drop_global else {}
    keep, todo = set(), [graph[node].name]
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo.extend(i for i in graph[name].inputs if i not in gated.get(name, ()))
    sub = Graph(f"{graph.name}[:{node}]", meta=graph.meta)

    def add(name, op, inputs, attrs):
        for key in ("out_channels", "out_features", "groups"):
            if key in attrs and thin:
                attrs[key] = 1
            elif key in attrs and divide_channels > 1:
                attrs[key] = max(1, attrs[key] // divide_channels)
        sub.add_node(name, op, inputs, **attrs)

    for n in graph.topo_order():
        if n.name not in keep:
            continue
        op, attrs, inputs = n.op, dict(n.attrs), n.inputs
        if gated.get(n.name):
            inputs = tuple(i for i in n.inputs if i not in gated[n.name])
            if len(inputs) == 1 and op != "concat":
                op, attrs = "identity", {}
        if op == "input":
            shape = list(input_shape or attrs["shape"])
            if thin:
                shape[0] = 1
            attrs["shape"] = shape
        if linearise and isinstance(get_op(op), Activation):
            op, attrs = ("sigmoid" if op in GATES else "identity"), {}
        if linearise and op in ("max_pool2d", "max_pool2d_with_indices"):
            if attrs.pop("dilation") != (1, 1):
                raise ArchlabError(f"{op} '{n.name}': the oracle cannot linearise a dilated max pooling")
            op, attrs = "avg_pool2d", {**attrs, "count_include_pad": True}
        if linearise and op == "max_unpool2d":
            op, attrs, inputs = _spread(graph, n, add)
        add(n.name, op, inputs, attrs)
    sub.set_output(node)
    return sub.validate()


def _spread(graph: Graph, unpool, add) -> tuple[str, dict, tuple[str, ...]]:
    """Linearise a ``max_unpool2d``: a transposed conv with its pool's geometry
    spreads each pooled value over every position of its window (where the
    maximum may have been). Adds that conv (through ``add``) and
    returns what stands for the unpooling: a ``crop2d`` to the pool's input when
    a ceil-mode window overhangs it, else an identity of the conv, padded to
    that size by ``output_padding``."""
    x, pool = unpool.inputs[0], graph[unpool.inputs[1]]
    a, pool_input = pool.attrs, pool.inputs[0]
    want, have = graph[pool_input].shape[1:], graph[x].shape[1:]
    full = [(have[i] - 1) * a["stride"][i] - 2 * a["padding"][i] + a["dilation"][i] * (a["kernel_size"][i] - 1) + 1
            for i in (0, 1)]
    name = f"{unpool.name}.spread"
    add(name, "conv_transpose2d", (x,), {
        "out_channels": graph[x].shape[0], "kernel_size": a["kernel_size"], "stride": a["stride"],
        "padding": a["padding"], "dilation": a["dilation"],
        "output_padding": tuple(max(0, want[i] - full[i]) for i in (0, 1)), "bias": False,
    })
    if any(f > w for f, w in zip(full, want)):
        return "crop2d", {"offset": (0, 0)}, (name, pool_input)
    return "identity", {}, (name,)


def _channel_divisor(graph: Graph, node: str) -> int:
    """The greatest common divisor of the channel and group counts of ``node``'s
    ancestors (1 when there is no channel count to divide: thinning is then pointless)."""
    import networkx as nx

    counts = [
        v for n in nx.ancestors(graph.nx, node) | {node}
        for k, v in graph[n].attrs.items() if k in ("out_channels", "out_features", "groups") and v > 1
    ]
    return math.gcd(*counts) if counts else 1


def _global_inputs(graph: Graph) -> dict[str, set[str]]:
    """For each mul/add/concat with both kinds of inputs, its inputs whose field is
    global without layout."""
    fields = receptive_fields(graph)
    out = {}
    for n in graph:
        if n.op in ("mul", "add", "concat"):
            dropped = {i for i in n.inputs if fields[i].is_global and fields[i].local_size is None}
            if dropped and len(dropped) < len(set(n.inputs)):
                out[n.name] = dropped
    return out


def positive_weights_(module: torch.nn.Module) -> None:
    """Make every layer of ``module`` a positive weighted average, in place
    (see the module docstring)."""
    import torch

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean = torch.zeros(c, dtype=torch.float64)
                m.running_var = torch.ones(c, dtype=torch.float64)
                m.track_running_stats = True  # eval mode then uses the running statistics
                if m.affine:
                    m.weight.abs_().add_(1e-3)
                    m.bias.zero_()
            elif isinstance(getattr(m, "weight", None), torch.Tensor):
                w = m.weight.abs()
                w += w.mean() + 1e-12
                w /= w.sum(dim=tuple(range(1, w.dim())), keepdim=True)
                m.weight.copy_(w)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()


def _fit_input(graph: Graph, node: str) -> Optional[tuple[tuple[int, ...], RF]]:
    """An input shape at which some unit's whole field lies inside the image: the
    graph's own if it fits, else the field plus two jumps of slack, grown until
    the graph accepts it. ``None`` when the field grows with the input (adaptive
    pooling into fixed bins), so that no size fits."""
    own = tuple(graph.input_nodes[0].shape)
    sub = ancestors_graph(graph, node)
    rf = receptive_fields(sub)[node]
    if _fits(rf, _central_unit(rf, sub[node].shape[1:], fit=True)):
        return own, rf
    sides = []
    for a in (0, 1):
        sides.append(math.ceil(rf.local_size[a] if rf.local_size else 1) + 2 * math.ceil(rf.jump[a] + rf.slack[a]) + 1)
    for _ in range(64):
        try:
            sub = ancestors_graph(graph, node, input_shape=(own[0], *sides))
        except ArchlabError:
            sub = None
        if sub is not None:
            theory = receptive_fields(sub)[node]
            if theory.local_size != rf.local_size and all(a > b for a, b in zip(sides, own[1:])):
                return None  # a larger input gave a larger field
            if _fits(theory, _central_unit(theory, sub[node].shape[1:], fit=True)):
                return (own[0], *sides), theory
        sides = [s + max(1, math.ceil(rf.jump[a])) for a, s in enumerate(sides)]
    raise ArchlabError(f"node '{node}' of graph {graph.name}: found no input size that fits (last tried {sides})")


def _fits(rf: RF, unit: tuple[int, int]) -> bool:
    """Whether the field of ``unit`` (with its slack) lies inside the input."""
    return all(
        0 <= lo - e and hi + e <= n - 1 for (lo, hi), n, e in zip(rf.box(*unit), rf.input_size, rf.slack)
    )


def _central_unit(rf: RF, out_hw: tuple[int, int], *, fit: bool) -> tuple[int, int]:
    """The unit nearest the centre of the output map (whose field lies inside the
    input when ``fit`` and such a unit exists)."""
    unit = []
    for a, n in enumerate(out_hw):
        order = sorted(range(n), key=lambda i: (abs(2 * i - (n - 1)), i))
        pick = order[0]
        if fit and not rf.is_global:
            for i in order:
                c, half = rf.start[a] + i * rf.jump[a], (rf.size[a] - 1) / 2 + rf.slack[a]
                if c - half >= 0 and c + half <= rf.input_size[a] - 1:
                    pick = i
                    break
        unit.append(pick)
    return tuple(unit)  # type: ignore[return-value]


def measure_receptive_field(
    graph: Graph,
    node: str,
    *,
    input_size: Optional[tuple[int, int]] = None,
    unit: Optional[tuple[int, int]] = None,
    thin: bool = True,
    local: bool = False,
) -> OracleResult:
    """Measure the field of one output unit of ``node`` with autograd (float64)
    and set it beside the theoretical field.

    Args:
        graph: any graph with one image input; only its nodes' ``meta["rf"]``
            (and missing shapes) are written.
        node: the node whose output unit is measured.
        input_size: (H, W) to feed; by default the graph's own input size if a
            unit's field fits in it, else the smallest size (field plus two jumps of
            slack) at which it does, so nothing is clipped. Global nodes, and fields
            that grow with the input (adaptive pooling into bins), use the graph's
            own size and are compared clipped.
        unit: the output unit ``(i, j)``; by default the one nearest the centre
            (among those whose field fits, when ``input_size`` is chosen here).
        thin: use a thinned network (see the module docstring).
        local: measure the spatial paths only: global branches (squeeze-and-
            excitation gates, image pooling) are removed (see :func:`ancestors_graph`),
            so a node whose field is global through them shows its ``local_size``.

    Returns:
        An :class:`OracleResult`; ``.ok`` says whether measurement and theory agree.

    Raises:
        ArchlabError: when no input size fits or the graph cannot be linearised.
    """
    import torch

    from archlab.torchio import to_module

    if local:
        graph = ancestors_graph(graph, node, drop_global=True)
    base = receptive_fields(graph)[node]  # also checks there is one image input
    channels = graph.input_nodes[0].shape[0]
    fitted = None if input_size is not None or base.is_global else _fit_input(graph, node)
    if fitted is not None:
        shape, theory = fitted
    else:  # as asked, for a global field, or when no size avoids clipping
        shape = (channels, *input_size) if input_size is not None else tuple(graph.input_nodes[0].shape)
        theory = receptive_fields(ancestors_graph(graph, node, input_shape=shape))[node]
    fit = input_size is None
    net = None
    if thin:
        divisor = _channel_divisor(graph, node)
        for kw in ({"thin": True}, {"divide_channels": divisor} if divisor > 1 else None):
            if kw is None:
                continue
            try:
                net = ancestors_graph(graph, node, input_shape=shape, linearise=True, **kw)
                break
            except ArchlabError:
                continue
    thinned = net is not None
    if net is None:
        net = ancestors_graph(graph, node, input_shape=shape, linearise=True)
    out_shape = net[node].shape
    spatial = len(out_shape) == 3
    if unit is None:
        unit = _central_unit(theory, out_shape[1:], fit=fit) if spatial else (0, 0)

    module = to_module(net).double()
    positive_weights_(module)
    x = torch.ones((1, *net.input_nodes[0].shape), dtype=torch.float64, requires_grad=True)
    y = module(x)
    target = y[0, :, unit[0], unit[1]].sum() if spatial else y.sum()
    (grad,) = torch.autograd.grad(target, x)
    hit = grad[0].abs().sum(0) > 0
    rows = torch.nonzero(hit.any(1)).flatten().tolist()
    cols = torch.nonzero(hit.any(0)).flatten().tolist()
    box = ((rows[0], rows[-1]), (cols[0], cols[-1])) if rows else None
    return OracleResult(node, tuple(shape[1:]), tuple(unit), box, theory.pixel_box(*unit), theory, thinned)
