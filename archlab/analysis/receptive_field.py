"""Theoretical receptive fields: a pass over the graph (Araujo, Norris & Sim,
"Computing Receptive Fields of Convolutional Neural Networks", Distill 2019).

Conventions (per spatial axis, H then W):

* Coordinates are input pixels; ``0`` is the *centre* of the first input pixel,
  so pixel ``k`` spans ``[k - 1/2, k + 1/2]``.
* ``size`` (r): the number of input pixels, in a row, that can influence one
  output unit; theoretical, i.e. not clipped to the image.
* ``jump`` (j): the distance in input pixels between neighbouring output units
  (the effective stride); a ``Fraction`` below 1 after upsampling.
* ``start``: the centre of the field of the first output unit (index 0); the
  field of unit ``i`` is centred at ``start + i * jump`` and spans
  ``start + i * jump -/+ (size - 1) / 2``. Padding makes ``start`` negative.

Each op's rule (:meth:`archlab.ops.Op.rf`) gives a :class:`~archlab.ops.base.Window`
``(kernel, stride, padding)`` per axis and the forward recurrences are::

    jump_out  = jump_in * stride
    size_out  = size_in + (kernel - 1) * jump_in
    start_out = start_in + ((kernel - 1) / 2 - padding) * jump_in

A node with several inputs (add, concat, mul) takes the union of its inputs'
fields. When all paths have the same jump the union is again a regular field
(its bounding box; equal to the largest field when the centres agree); the node
is *aligned* when jumps and centres agree, and otherwise flagged (``aligned``
False, ``misaligned_at`` names the merge). When jumps differ the field of the
largest path is kept. A ``Cx1x1`` input broadcast by ``mul`` (a squeeze-and-
excitation gate) is read by every output unit: the output covers what that input
covers, usually the whole image (``is_global``). Only inputs an op reads for
their values (:meth:`~archlab.ops.base.Op.reads`) are paths: the size reference
of ``upsample``/``crop2d`` and the indices ``max_unpool2d`` reads are not.

Tensors of any rank: the spatial axes of a rank >= 3 tensor are its *last two*
IR axes (``C x H x W``, ``g x C/g x H x W`` in a channel shuffle); an op's rule
says :data:`POINTWISE` when it does not mix them (element-wise ops; softmax,
reductions and permutes over other axes), a :class:`Window` per spatial axis,
or :data:`GLOBAL`. A tensor of rank < 3 (a flat vector, ``L x E`` tokens) has no
spatial layout: its units' fields are global, whatever the rule. A node none of
whose value paths reaches the input (a ``parameter``: a class token, a
position embedding) is a *constant* (``is_constant``): it depends on no input
pixel, and merges ignore it (``x + pos_embedding`` keeps ``x``'s field).

Resampling (upsampling, transposed convolution, unpooling, adaptive pooling into
uneven bins) has fractional strides: output ``o`` reads a step function of ``o``
that a regular grid follows on average only. Its rule is the regular window
closest to the true reads (:meth:`Window.fit`: a 2x nearest upsampling or 2x2
unpooling puts output ``o``'s centre at ``(o - 1/2) / 2`` input steps, so that a
symmetric net stays centred), and ``slack`` bounds how far a unit's true field
edges may be from its :meth:`RF.box` (``exact`` is False): the windows' own
slacks times the jump they act at, summed along the path (1/4 input step for
each 2x upsampling). A resampling whose reads are regular (bed-of-nails
unpooling, a stride-1 transposed conv) stays exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Optional, Sequence

from archlab.errors import ArchlabError, GraphError, short_int
from archlab.graph.plan import per_sig, plan
from archlab.ops.base import GLOBAL, POINTWISE, Window

if TYPE_CHECKING:  # pragma: no cover
    from archlab.graph import Graph, Node

Pair = tuple[Fraction, Fraction]
Box = tuple[tuple[Fraction, Fraction], tuple[Fraction, Fraction]]
"""``((lo_h, hi_h), (lo_w, hi_w))``: the centres of the first and last input
pixels a field spans, per axis (unclipped)."""


def _num(x: Fraction) -> int | Fraction:
    return int(x) if x.denominator == 1 else x


def _q(x) -> int | Fraction:
    """Exact value as an ``int`` when integral, else a ``Fraction``: ints keep the
    pass fast (Fraction arithmetic is ~50x slower) on the common integer grids."""
    if type(x) is int:
        return x
    return x.numerator if x.denominator == 1 else x


def _half(x) -> int | Fraction:
    """``x / 2`` exactly."""
    if type(x) is int:
        return x >> 1 if x & 1 == 0 else Fraction(x, 2)
    return _q(x / 2)


def _fmt(x: Fraction) -> str:
    if x.denominator == 1:
        return short_int(int(x))
    return f"{float(x):g}" if -FIELD_LIMIT <= x <= FIELD_LIMIT else short_int(int(x))


@dataclass(frozen=True)
class RF:
    """The receptive field of one node's output units (see the module docstring
    for the conventions).

    Fields:
        size: field side per axis (H, W), in input pixels, unclipped. For a global
            node: the input's size.
        jump: distance between neighbouring output units, in input pixels. For a
            global node without spatial layout (after global pooling): the input size.
        start: centre of the first output unit's field. For a global node without
            spatial layout: the centre of the input.
        is_global: every output unit reads the whole input (global pooling,
            flatten, linear, or a broadcast squeeze-and-excitation gate).
        aligned: every merge upstream (and here) has paths agreeing on jump and
            centre; False when some do not (see ``misaligned_at``).
        misaligned_at: names of the merge nodes, upstream or this one, whose paths
            disagree.
        max_input: for a node with several inputs, the input with the largest
            field (the whole-input one when a path is global); else ``None``.
        local_size: for a global node, the field through its spatial (non-global)
            paths, or ``None`` when it has none; equal to ``size`` otherwise.
        input_size: (H, W) of the graph input.
        out_size: (H, W) of the node's output grid, ``None`` when it has none.
        slack: per axis, a bound (input pixels) on how far the true edges of a
            unit's field may lie from :meth:`box`: 0 unless resampling upstream
            (upsampling, transposed conv, unpooling, uneven adaptive bins) makes
            the output grid regular only on average.
        is_constant: the node depends on no input pixel (a ``parameter`` and ops
            on it alone): ``size`` is 0 and :meth:`box` is empty.
    """

    size: Pair
    jump: Pair
    start: Pair
    is_global: bool = False
    aligned: bool = True
    misaligned_at: tuple[str, ...] = ()
    max_input: Optional[str] = None
    local_size: Optional[Pair] = None
    input_size: tuple[int, int] = (0, 0)
    out_size: Optional[tuple[int, int]] = None
    slack: Pair = (0, 0)
    is_constant: bool = False

    @property
    def coverage(self) -> float:
        """Fraction of the input image covered by the field of the central output
        unit ``((H-1)//2, (W-1)//2)``, clipped to the image (1.0 when global)."""
        if self.is_global:
            return 1.0
        if self.out_size is None or self.is_constant:
            return 0.0
        (t, b), (l, r) = self.pixel_box((self.out_size[0] - 1) // 2, (self.out_size[1] - 1) // 2)
        return max(0, b - t + 1) * max(0, r - l + 1) / (self.input_size[0] * self.input_size[1])

    @property
    def exact(self) -> bool:
        """Every unit's field is exactly its :meth:`box` (no resampling upstream)."""
        return not any(self.slack)

    # -- helpers -------------------------------------------------------------
    @property
    def side(self) -> int | Fraction | None:
        """The size when the field is square, else ``None``."""
        return _num(self.size[0]) if self.size[0] == self.size[1] else None

    def center(self, i: int, j: int) -> Pair:
        """Centre (input pixels) of the field of output unit ``(i, j)``."""
        return (self.start[0] + i * self.jump[0], self.start[1] + j * self.jump[1])

    def box(self, i: int, j: int) -> Box:
        """Centres of the first and last input pixels the field of unit ``(i, j)``
        spans, per axis, unclipped; the whole input for a global field."""
        if self.is_global:
            return tuple((0, n - 1) for n in self.input_size)  # type: ignore[return-value]
        c = self.center(i, j)
        return tuple((_q(c[a] - _half(self.size[a] - 1)), _q(c[a] + _half(self.size[a] - 1))) for a in (0, 1))  # type: ignore[return-value]

    def pixel_box(self, i: int, j: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Inclusive pixel index range ``((top, bottom), (left, right))`` of unit
        ``(i, j)``'s field clipped to the input (empty ranges have bottom < top)."""
        out = []
        for (lo, hi), n in zip(self.box(i, j), self.input_size):
            out.append((max(0, -((-lo.numerator) // lo.denominator)), min(n - 1, hi.numerator // hi.denominator)))
        return tuple(out)  # type: ignore[return-value]

    def __str__(self) -> str:
        if self.is_constant:
            return "constant"
        if self.is_global:
            text = "global"
            if self.local_size is not None:
                text += f" (local {'x'.join(_fmt(s) for s in self.local_size)})"
            return text
        two = lambda p: _fmt(p[0]) if p[0] == p[1] else f"{_fmt(p[0])}x{_fmt(p[1])}"  # noqa: E731
        text = f"{'x'.join(_fmt(s) for s in self.size)} jump {two(self.jump)} start {two(self.start)}"
        if not self.exact:
            text += f" (+-{two(self.slack)})"
        return text if self.aligned else text + " (misaligned)"

    def as_dict(self) -> dict:
        """Plain JSON-friendly values (fractions as floats)."""
        f = lambda p: None if p is None else [float(x) for x in p]  # noqa: E731
        return {
            "size": f(self.size), "jump": f(self.jump), "start": f(self.start), "is_global": self.is_global,
            "aligned": self.aligned, "misaligned_at": list(self.misaligned_at), "max_input": self.max_input,
            "local_size": f(self.local_size), "coverage": self.coverage, "slack": f(self.slack),
            "is_constant": self.is_constant,
        }


class _Local:
    """Spatial geometry of a field along both axes: size, jump, start, slack
    (immutable by convention: nodes on the same grid share one)."""

    __slots__ = ("size", "jump", "start", "slack")

    def __init__(self, size: Pair, jump: Pair, start: Pair, slack: Pair = (0, 0)) -> None:
        self.size, self.jump, self.start, self.slack = size, jump, start, slack

    def lo(self, a: int) -> Fraction:
        return _q(self.start[a] - _half(self.size[a] - 1))

    def hi(self, a: int) -> Fraction:
        return _q(self.start[a] + _half(self.size[a] - 1))

    def bounds(self) -> tuple[tuple, tuple]:
        """``((lo_h, hi_h), (lo_w, hi_w))``: :meth:`lo` and :meth:`hi` of both axes."""
        (zh, zw), (ch, cw) = self.size, self.start
        hh, hw = _half(zh - 1), _half(zw - 1)
        return (_q(ch - hh), _q(ch + hh)), (_q(cw - hw), _q(cw + hw))

    def area(self) -> Fraction:
        return self.size[0] * self.size[1]

    def through(self, wins: Sequence[Window]) -> _Local:
        (wh, ww), (jh, jw) = wins, self.jump
        if type(jh) is int and type(jw) is int and wh.slack is None and ww.slack is None:
            kh, sh, ph, kw, sw, pw = wh.kernel, wh.stride, wh.padding, ww.kernel, ww.stride, ww.padding
            if type(kh) is type(sh) is type(ph) is type(kw) is type(sw) is type(pw) is int:
                # Integer windows on an integer grid (convolutions, pooling): exact ints, no slack added.
                (zh, zw), (ch, cw) = self.size, self.start
                return _Local((zh + (kh - 1) * jh, zw + (kw - 1) * jw), (jh * sh, jw * sw),
                              (_q(ch + (_half(kh - 1) - ph) * jh), _q(cw + (_half(kw - 1) - pw) * jw)), self.slack)
        size, jump, start, slack = [], [], [], []
        for a, w in enumerate(wins):
            k, s, p = _q(w.kernel), _q(w.stride), _q(w.padding)
            j = self.jump[a]
            size.append(_q(self.size[a] + (k - 1) * j))
            start.append(_q(self.start[a] + (_half(k - 1) - p) * j))
            jump.append(_q(j * s))
            # A resampling window is a regular grid only on average: a unit's true window
            # lies within the rule's slack of it (input units); a rule that does not
            # know its slack is taken as a whole input step off (max(1, s) for irregular bins).
            e = w.slack
            if e is None:
                e = 0 if type(k) is int and type(s) is int and type(p) is int else max(1, s)
            slack.append(_q(self.slack[a] + j * e) if e else self.slack[a])
        return _Local(tuple(size), tuple(jump), tuple(start), tuple(slack))  # type: ignore[arg-type]


FIELD_LIMIT = 2**64
"""Largest field size, jump or start (input pixels) the pass accepts: beyond it
no real network lies (strides multiplying past 2**64), and every figure stays
finite as a float (JSON, tables)."""


def _bounded(node: Node, loc: _Local) -> _Local:
    """``loc``, or a one-line error naming ``node`` when it is beyond :data:`FIELD_LIMIT`."""
    lim = FIELD_LIMIT
    for v in (*loc.size, *loc.jump, *loc.start):
        if not -lim <= v <= lim:
            raise ArchlabError(
                f"{node.op} '{node.name}': receptive field beyond 2**64 input pixels (size "
                f"{'x'.join(_fmt(x) for x in loc.size)}, jump {'x'.join(_fmt(x) for x in loc.jump)}); "
                "its strides, kernels or paddings are too large for any real network")
    return loc


def _is_broadcast(in_shape: tuple, out_shape: tuple, rule) -> bool:
    """An input spread over a larger output along a spatial axis by an
    element-wise op (a ``Cx1x1`` ``mul`` gate over ``CxHxW``). Only a pointwise
    rule broadcasts: an op with its own window (upsampling, transposed conv,
    unpooling, adaptive pooling to more than one bin) says through that window
    which inputs each output reads, a 1x1 map included."""
    return (len(in_shape) >= 3 and len(out_shape) >= 3
            and any(i == 1 and o != 1 for i, o in zip(in_shape[-2:], out_shape[-2:]))
            and (rule is POINTWISE or rule == POINTWISE))


def _merge(node: Node, cands: list[tuple[str, RF, Optional[_Local], bool]], input_size) -> RF:
    """Union of the fields arriving through each input (``cands``: input name,
    that input's RF, its geometry after the node's rule or ``None`` when global
    without layout, whether the input is broadcast)."""
    misaligned: set[str] = set()
    spatial: list[tuple[str, _Local]] = []
    global_input = None
    for name, rf, loc, bcast in cands:
        if rf.misaligned_at:
            misaligned.update(rf.misaligned_at)
        if rf.is_global:
            if global_input is None:
                global_input = name
        elif bcast:
            misaligned.add(node.name)  # a fixed region read by every unit: not a regular field
        if loc is not None and not bcast:
            spatial.append((name, loc))
    if not spatial and global_input is None:
        # Only broadcast inputs: every unit reads what they read (never left without a field).
        spatial = [(name, loc) for name, _, loc, _ in cands if loc is not None]
        if not spatial:
            raise GraphError(f"{node.op} '{node.name}': no input with a spatial layout or a global field")
    local: Optional[_Local] = None
    max_input = None
    if spatial:
        max_input, best = spatial[0]
        best_area = best.area()
        for name, loc in spatial:
            if loc.area() > best_area:  # first of equals
                max_input, best, best_area = name, loc, loc.area()
        if all(loc.jump == best.jump for _, loc in spatial):
            (lo0, hi0), (lo1, hi1) = best.bounds()
            (e0, e1), aligned = best.slack, True
            for _, loc in spatial:
                if loc is best:
                    continue
                (l0, h0), (l1, h1) = loc.bounds()
                lo0, hi0, lo1, hi1 = min(lo0, l0), max(hi0, h0), min(lo1, l1), max(hi1, h1)
                e0, e1 = max(e0, loc.slack[0]), max(e1, loc.slack[1])
                aligned = aligned and loc.start == best.start
            local = _Local((_q(hi0 - lo0 + 1), _q(hi1 - lo1 + 1)), best.jump, (_half(lo0 + hi0), _half(lo1 + hi1)),
                           (e0, e1))
            if not aligned:
                misaligned.add(node.name)
        else:
            local = best
            misaligned.add(node.name)
    if global_input is not None:
        max_input = global_input
    if len(cands) == 1 or all(c[0] == cands[0][0] for c in cands):
        max_input = None
    return _make(node.meta["shape"], local, global_input is not None, tuple(sorted(misaligned)), max_input,
                 input_size)


_new_rf = object.__new__


def _rf(size, jump, start, is_global, misaligned, max_input, local_size, input_size, out_size, slack,
        is_constant=False) -> RF:
    # RF(...) without the frozen dataclass's per-field object.__setattr__ (this
    # pass creates one per node); same fields, same values, still frozen after.
    rf = _new_rf(RF)
    rf.__dict__.update(size=size, jump=jump, start=start, is_global=is_global, aligned=not misaligned,
                       misaligned_at=misaligned, max_input=max_input, local_size=local_size,
                       input_size=input_size, out_size=out_size, slack=slack, is_constant=is_constant)
    return rf


def _make(out: tuple, local: Optional[_Local], is_global: bool, misaligned: tuple[str, ...], max_input,
          input_size) -> RF:
    out_size = (out[-2], out[-1]) if len(out) >= 3 else None
    if is_global:
        h, w = input_size
        if local is None:
            return _rf(input_size, input_size, (_half(h - 1), _half(w - 1)), True, misaligned, max_input, None,
                       input_size, out_size, (0, 0))
        return _rf(input_size, local.jump, local.start, True, misaligned, max_input, local.size, input_size,
                   out_size, local.slack)
    return _rf(local.size, local.jump, local.start, False, misaligned, max_input, local.size, input_size, out_size,
               local.slack)


def receptive_fields(graph: Graph) -> dict[str, RF]:
    """Compute the receptive field of every node, in topological order, and write
    it to ``node.meta["rf"]``.

    Args:
        graph: a graph with a single ``CxHxW`` input; shapes are inferred if
            missing. Other nodes may have any rank (see the module docstring).

    Returns:
        Node name -> :class:`RF` (the input node has size 1, jump 1, start 0).
        Nodes whose field equals their input's (element-wise ops on the same
        grid) share that input's (immutable) :class:`RF` object.

    Raises:
        GraphError: when the graph has no or several inputs, or a non-image input.
        ArchlabError: naming the node when its op has no receptive-field rule.
    """
    inputs = graph.input_nodes
    if len(inputs) != 1:
        raise GraphError(f"graph {graph.name}: receptive fields need exactly one input, got {len(inputs)}")
    steps = plan(graph)  # validates, so every shape is known
    in_shape = inputs[0].shape
    if len(in_shape) != 3:
        raise GraphError(f"input '{inputs[0].name}' of graph {graph.name} is {in_shape}, not an image (CxHxW)")
    input_size = (in_shape[1], in_shape[2])
    fields: dict[str, RF] = {}
    locals_: dict[str, Optional[_Local]] = {}

    def window_rule(st):
        op = st.op
        try:
            return op.rf_in(graph, st.node, st.in_shapes, st.shape) if op.needs_graph else op.rf(st.node, st.in_shapes, st.shape)
        except NotImplementedError:
            return None

    constant: set[str] = set()  # nodes that depend on no input pixel (parameters and ops on them alone)
    for (node, name, op, inputs, in_shapes, shape, reads, _, _), rule in zip(steps, per_sig(steps, window_rule)):
        if not inputs and op.name == "input":
            loc = locals_[name] = _Local((1, 1), (1, 1), (0, 0))
            fields[name] = node.meta["rf"] = _make(shape, loc, False, (), None, input_size)
            continue
        if rule is None:
            raise ArchlabError(f"{op.name} '{name}': op {op.name} has no receptive-field rule (Op.rf)")
        if len(shape) < 3:
            rule = GLOBAL  # no spatial layout: every unit's field is global
        if len(inputs) == 1 and reads[0] == "value" and rule != GLOBAL and inputs[0] not in constant:
            src_name, src_shape = inputs[0], in_shapes[0]
            loc = locals_[src_name]
            if loc is not None and len(src_shape) >= 3 and not _is_broadcast(src_shape, shape, rule):
                # Fast path (most nodes): one spatial, non-broadcast input; what _merge does with one candidate.
                src = fields[src_name]
                if rule is POINTWISE or rule == POINTWISE:
                    if src.max_input is None and src_shape[-2:] == shape[-2:]:
                        # same grid, same field: share the input's (immutable) RF
                        fields[name] = node.meta["rf"] = src
                        locals_[name] = loc
                        continue
                else:
                    loc = _bounded(node, loc.through(rule))
                locals_[name] = loc  # == the geometry of rf (its local geometry when global)
                fields[name] = node.meta["rf"] = _make(shape, loc, src.is_global, src.misaligned_at, None,
                                                       input_size)
                continue
        # Inputs that only give a size or positions (upsample's "like", unpooling's indices) are not paths,
        # nor are constants.
        paths = [(i, s) for i, s, what in zip(inputs, in_shapes, reads) if what == "value" and i not in constant]
        if not paths:
            constant.add(name)
            locals_[name] = None
            out_size = (shape[-2], shape[-1]) if len(shape) >= 3 else None
            fields[name] = node.meta["rf"] = _rf((0, 0), (1, 1), (0, 0), False, (), None, None, input_size, out_size,
                                                 (0, 0), True)
            continue
        if rule == GLOBAL:
            rf = _make(shape, None, True, tuple(sorted({m for i, _ in paths for m in fields[i].misaligned_at})),
                       None, input_size)
        else:
            cands = []
            for i, in_shape in paths:
                loc = locals_[i]
                if loc is not None and len(in_shape) >= 3:
                    loc = _bounded(node, loc.through(rule))
                else:
                    loc = None  # no spatial layout left (flat, or global without positions)
                cands.append((i, fields[i], loc, _is_broadcast(in_shape, shape, rule)))
            rf = _merge(node, cands, input_size)
        # Keep the spatial geometry (positions of units) for global nodes that still have a layout.
        locals_[name] = None if (rf.is_global and rf.local_size is None) else _Local(
            rf.local_size if rf.is_global else rf.size, rf.jump, rf.start, rf.slack)
        fields[name] = node.meta["rf"] = rf
    return fields


def receptive_field(graph: Graph, node: str) -> RF:
    """The field of one node (runs :func:`receptive_fields` on the whole graph)."""
    graph[node]  # raises UnknownNodeError with the graph's name
    return receptive_fields(graph)[node]
