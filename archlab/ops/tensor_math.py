"""Tensor arithmetic on any rank: matrix products, softmax, reductions and
element-wise ops with a Python constant.

``dim`` attributes are torch dims of the batched tensor (:mod:`archlab.ops.dims`).
"""
from __future__ import annotations

import math

import operator

from archlab.errors import ShapeError
from archlab.ops.base import GLOBAL, POINTWISE, Attr, MemoryRule, Op, Saved, numel, register_op
from archlab.ops.dims import axes, axis, is_spatial


@register_op
class Matmul(Op):
    """``torch.matmul(a, b)``: ``a (..., n, k) @ b (..., k, m) -> (..., n, m)``;
    both inputs of the same IR rank >= 2 (the batch lines up), the leading dims
    broadcast (equal, or 1 on one side).

    Rules:
        * MACs: ``out elements x k`` (FlopCounterMode's bmm rule) under
          torchvision and full; fvcore's matmul handler counts ``a``'s elements
          x ``m``, which is less when ``a``'s leading dims broadcast. With
          ``fvcore_einsum`` (the product was ``torch.einsum`` in the model, MaxViT)
          fvcore's einsum handler: numpy's ``einsum_path`` cost ``2 x out elements x
          k``, read from its printout (``%.3e``, four significant digits), halved
          and floored; per sample, so equal to fvcore's count at batch 1.
        * receptive field: :data:`GLOBAL`.
        * memory: PyTorch folds both operands to 3-D for ``bmm``; autograd saves
          each operand for the other's gradient (``cross_saved``). An operand
          whose leading dims broadcast is first expanded and copied: that copy
          is saved instead of it, and is scratch at inference (measured).
    """

    name = "matmul"
    arity = (2, 2)
    doc = "matrix product a @ b over the last two dims (leading dims broadcast)"
    attrs = (Attr("fvcore_einsum", "bool", False),)

    def _lead(self, node, shapes) -> tuple[int, ...]:
        a, b = shapes
        if len(a) < 2 or len(a) != len(b):
            raise self.shape_error(ShapeError, node, shapes, "matmul needs two inputs of the same rank >= 2",
                                   fix="reshape so both are (..., n, k) and (..., k, m) with as many leading dims")
        if a[-1] != b[-2]:
            raise self.shape_error(ShapeError, node, shapes, f"inner sizes differ: a has {a[-1]} columns, b {b[-2]} rows",
                                   fix="transpose one operand (permute its last two dims)")
        lead = []
        for x, y in zip(a[:-2], b[:-2]):
            if x != y and 1 not in (x, y):
                raise self.shape_error(ShapeError, node, shapes, f"leading dims {a[:-2]} and {b[:-2]} do not broadcast")
            lead.append(max(x, y))
        return tuple(lead)

    def infer_shape(self, node, shapes):
        return (*self._lead(node, shapes), shapes[0][-2], shapes[1][-1])

    def macs(self, node, shapes, out, convention):
        if convention == "fvcore" and node.attrs.get("fvcore_einsum"):
            return math.floor(float("%.3e" % (2 * numel(out) * shapes[0][-1])) / 2)
        if convention == "fvcore":
            return numel(shapes[0]) * shapes[1][-1]
        return numel(out) * shapes[0][-1]

    def rf(self, node, shapes, out):
        return GLOBAL

    def memory(self, node, shapes, out):
        lead = self._lead(node, shapes)
        saved, copies = [], []
        for i, s in enumerate(shapes):
            if tuple(s[:-2]) == lead:
                saved.append(i)
            else:
                copies.append(Saved(f"expanded_{'ab'[i]}", numel(lead) * s[-2] * s[-1]))
        return MemoryRule(saved_inputs=tuple(saved), cross_saved=True, saved_extra=tuple(copies), scratch=tuple(copies))

    def emit(self, ctx, node, args, shapes):
        import torch

        return ctx.call_function(torch.matmul, args)


@register_op
class Softmax(Op):
    """``torch.softmax(x, dim)``.

    Rules: MACs 0 under torchvision and fvcore; ``full``: 3 per element
    (exponential, sum, division); receptive field :data:`POINTWISE` unless
    ``dim`` is spatial (then :data:`GLOBAL`); memory: autograd saves the output."""

    name = "softmax"
    doc = "softmax along a dim"
    attrs = (Attr("dim", "int", -1),)

    def infer_shape(self, node, shapes):
        axis(self, node, shapes, node.attrs["dim"], len(shapes[0]))
        return shapes[0]

    def macs(self, node, shapes, out, convention):
        return 3 * numel(out) if convention == "full" else 0

    def rf(self, node, shapes, out):
        return GLOBAL if is_spatial(axis(self, node, shapes, node.attrs["dim"], len(out)), len(out)) else POINTWISE

    def memory(self, node, shapes, out):
        return MemoryRule(saved_output=True, table_row=False)

    def emit(self, ctx, node, args, shapes):
        import torch

        return ctx.call_function(torch.softmax, [args[0], node.attrs["dim"]])


_REDUCE_FNS = ("mean", "sum", "amax", "amin", "norm")


@register_op
class Reduce(Op):
    """``torch.<fn>(x, dims, keepdim)`` for ``fn`` in mean, sum, amax, amin, and
    ``norm``: the Euclidean norm (``torch.linalg.vector_norm(x, 2, dims)``,
    ``x.norm(p=2, dim=dims)``; ConvNeXt-V2's global response normalisation).

    Rules: MACs 0 under torchvision and fvcore (neither counts them); ``full``:
    1 per input element. Receptive field :data:`POINTWISE` unless a reduced dim
    is spatial (then :data:`GLOBAL`: a mean over H and W is global pooling).
    Memory: mean and sum save nothing; amax, amin and norm save input and output."""

    name = "reduce"
    doc = "mean/sum/amax/amin/norm (Euclidean) over dims (keepdim keeps them as size 1)"
    attrs = (Attr("fn", "str"), Attr("dims", "ints"), Attr("keepdim", "bool", False))

    def _axes(self, node, shapes) -> list[int]:
        if node.attrs["fn"] not in _REDUCE_FNS:
            raise self.shape_error(ShapeError, node, shapes,
                                   f"fn={node.attrs['fn']!r} is not one of {', '.join(_REDUCE_FNS)}")
        return axes(self, node, shapes, node.attrs["dims"], len(shapes[0]))

    def infer_shape(self, node, shapes):
        (shape,) = shapes
        ax = set(self._axes(node, shapes))
        if node.attrs["keepdim"]:
            return tuple(1 if i in ax else s for i, s in enumerate(shape))
        out = tuple(s for i, s in enumerate(shape) if i not in ax)
        if not out:
            raise self.shape_error(ShapeError, node, shapes, "reducing every dim leaves no dimension",
                                   fix="set keepdim=True (or flatten and reduce dim 1 with keepdim)")
        return out

    def macs(self, node, shapes, out, convention):
        return numel(shapes[0]) if convention == "full" else 0

    def rf(self, node, shapes, out):
        rank = len(shapes[0])
        return GLOBAL if any(is_spatial(a, rank) for a in self._axes(node, shapes)) else POINTWISE

    def memory(self, node, shapes, out):
        if node.attrs["fn"] in ("amax", "amin", "norm"):
            return MemoryRule(saved_inputs=(0,), saved_output=True)
        return MemoryRule()

    def emit(self, ctx, node, args, shapes):
        import torch

        a = node.attrs
        kw = {"dim": tuple(a["dims"]), "keepdim": a["keepdim"]}
        if a["fn"] == "norm":
            return ctx.call_function(torch.linalg.vector_norm, [args[0], 2.0], kw)
        return ctx.call_function(getattr(torch, a["fn"]), [args[0]], kw)


def _rsub(x, value: float):
    return value - x


def _rdiv(x, value: float):
    import torch

    return torch.div(value, x)  # one kernel (``value / x`` is a reciprocal and a mul)


_SCALAR_FNS = {
    "add": operator.add, "sub": operator.sub, "rsub": _rsub, "mul": operator.mul,
    "div": operator.truediv, "rdiv": _rdiv, "pow": None,
}


@register_op
class Scalar(Op):
    """An element-wise op with a Python constant: ``x + value`` (add),
    ``x - value`` (sub), ``value - x`` (rsub), ``x * value`` (mul), ``x / value``
    (div), ``value / x`` (rdiv), ``x ** value`` (pow).

    Rules: MACs 0 under torchvision and fvcore; ``full``: 1 per element.
    Receptive field :data:`POINTWISE`. Memory: a new tensor in the input's
    layout; autograd saves the input for pow and rdiv, nothing otherwise."""

    name = "scalar"
    doc = "element-wise op with a constant: add, sub, rsub, mul, div, rdiv, pow"
    attrs = (Attr("fn", "str"), Attr("value", "float"))

    def infer_shape(self, node, shapes):
        if node.attrs["fn"] not in _SCALAR_FNS:
            raise self.shape_error(ShapeError, node, shapes, f"fn={node.attrs['fn']!r} is not one of "
                                   f"{', '.join(_SCALAR_FNS)}")
        return shapes[0]

    def macs(self, node, shapes, out, convention):
        return numel(out) if convention == "full" else 0

    def rf(self, node, shapes, out):
        return POINTWISE

    def memory(self, node, shapes, out):
        saved = (0,) if node.attrs["fn"] in ("pow", "rdiv") else ()
        return MemoryRule(saved_inputs=saved, table_row=False, layout="like_input")

    def emit(self, ctx, node, args, shapes):
        import torch

        fn, value = node.attrs["fn"], node.attrs["value"]
        return ctx.call_function(_SCALAR_FNS[fn] or torch.pow, [args[0], value])
