"""Ops that join several tensors: add (residuals), mul (gates), concat (branches, skips)."""
from __future__ import annotations

import operator

from archlab.errors import ChannelMismatchError, ShapeError, SpatialMismatchError, fmt_shape, short_list
from archlab.ops.base import POINTWISE, MemoryRule, Op, numel, register_op


def _names(node) -> str:
    return short_list([f"'{i}'" for i in node.inputs])


def _check_ranks(op, node, shapes) -> None:
    """Every input has the first one's rank, and that rank is at least 1."""
    first = shapes[0]
    for s in shapes:
        if len(s) != len(first):
            raise op.shape_error(ShapeError, node, shapes, f"inputs {_names(node)} have different ranks")
    if not first:
        raise op.shape_error(ShapeError, node, shapes, f"inputs {_names(node)} have no dimension")


@register_op
class Add(Op):
    """Element-wise sum of two or more tensors of identical shape."""

    name = "add"
    arity = (2, None)
    doc = "element-wise sum (residual connections)"

    def infer_shape(self, node, shapes):
        _check_ranks(self, node, shapes)
        first = shapes[0]
        for s in shapes[1:]:
            if s[0] != first[0]:
                raise self.shape_error(
                    ChannelMismatchError, node, shapes, f"channels differ between inputs {_names(node)}",
                    fix="a residual branch that changes width needs a 1x1 projection on the shortcut",
                )
            if s[1:] != first[1:]:
                raise self.shape_error(
                    SpatialMismatchError, node, shapes, f"spatial sizes differ between inputs {_names(node)}",
                    fix="a strided branch needs a strided shortcut (or crop/resize one side)",
                )
        return first

    def macs(self, node, shapes, out, convention):
        return numel(out) * (len(shapes) - 1) if convention == "full" else 0

    def rf(self, node, shapes, out):
        return POINTWISE

    def memory(self, node, shapes, out):
        # AddBackward0 saves nothing. With 3+ inputs each partial sum is a
        # transient tensor of the output's size, not counted here.
        return MemoryRule()

    def emit(self, ctx, node, args, shapes):
        out = args[0]
        for a in args[1:]:
            out = ctx.call_function(operator.add, [out, a])
        return out


@register_op
class Mul(Op):
    """Element-wise product; a ``Cx1x1`` gate broadcasts over ``CxHxW``
    (squeeze-and-excitation)."""

    name = "mul"
    arity = (2, 2)
    doc = "element-wise product; Cx1x1 broadcasts (squeeze-and-excitation gates)"

    def infer_shape(self, node, shapes):
        _check_ranks(self, node, shapes)
        a, b = shapes
        if a[0] != b[0]:
            raise self.shape_error(ChannelMismatchError, node, shapes, f"channels differ between inputs {_names(node)}")
        if a[1:] == b[1:]:
            return a
        if all(x == 1 for x in b[1:]):
            return a
        if all(x == 1 for x in a[1:]):
            return b
        raise self.shape_error(
            SpatialMismatchError, node, shapes, f"spatial sizes differ between inputs {_names(node)}",
            fix="only a Cx1x1 gate broadcasts",
        )

    def macs(self, node, shapes, out, convention):
        return numel(out) if convention == "full" else 0

    def rf(self, node, shapes, out):
        """Pointwise; a broadcast Cx1x1 input is read by every output unit (the
        receptive-field pass treats it as covering that input's whole field)."""
        return POINTWISE

    def memory(self, node, shapes, out):
        # MulBackward0 saves b when a requires grad and a when b does.
        return MemoryRule(saved_inputs=(0, 1), cross_saved=True)

    def emit(self, ctx, node, args, shapes):
        return ctx.call_function(operator.mul, args)


@register_op
class Concat(Op):
    """Channel concatenation (``torch.cat(dim=1)``) of inputs with equal HxW."""

    name = "concat"
    arity = (1, None)
    doc = "concatenate along channels (inception branches, dense blocks, skips)"

    def infer_shape(self, node, shapes):
        _check_ranks(self, node, shapes)
        first = shapes[0]
        for s in shapes:
            if s[1:] != first[1:]:
                raise self.shape_error(
                    SpatialMismatchError, node, shapes,
                    f"spatial sizes differ between inputs {_names(node)} ({' vs '.join(fmt_shape(x[1:]) for x in shapes)})",
                    fix="crop or resize one side to the other's size",
                )
        return (sum(s[0] for s in shapes), *first[1:])

    def macs(self, node, shapes, out, convention):
        return 0

    def rf(self, node, shapes, out):
        return POINTWISE

    def memory(self, node, shapes, out):
        return MemoryRule()  # CatBackward0 keeps only the split sizes

    def emit(self, ctx, node, args, shapes):
        import torch

        return ctx.call_function(torch.cat, [list(args)], {"dim": 1})


