"""Ops that join tensors: element-wise add, sub, mul and div (residuals, gates,
position embeddings), concat (branches, skips) and stack.

The element-wise ops take inputs of the same rank under NumPy broadcasting
(every dim equal, or 1 on one side: a ``Cx1x1`` gate over ``CxHxW``, a ``1xE``
embedding over ``LxE``); for ``CxHxW`` inputs a mismatch is reported as a
channel or spatial mismatch with its usual fix. All are :data:`POINTWISE` (the
receptive-field pass treats an input broadcast over the spatial axes as read by
every output unit).
"""
from __future__ import annotations

import operator

from archlab.errors import ShapeError, SpatialMismatchError, fmt_shape, short_list
from archlab.ops.base import GLOBAL, POINTWISE, Attr, MemoryRule, Op, numel, register_op
from archlab.ops.dims import axis, broadcast, is_spatial


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


class Elementwise(Op):
    """A binary (or, for ``add``, n-ary) element-wise op under broadcasting.

    Rules: MACs 0 under torchvision and fvcore (neither counts them); ``full``:
    one per output element (``add``: per extra input); a new tensor laid out
    like its first input."""

    arity = (2, 2)
    torch_fn = None

    def infer_shape(self, node, shapes):
        return broadcast(self, node, shapes)

    def macs(self, node, shapes, out, convention):
        return numel(out) * (len(shapes) - 1) if convention == "full" else 0

    def rf(self, node, shapes, out):
        return POINTWISE

    def emit(self, ctx, node, args, shapes):
        return ctx.call_function(self.torch_fn, args)


@register_op
class Add(Elementwise):
    """Element-wise sum of two or more tensors (broadcasting)."""

    name = "add"
    arity = (2, None)
    doc = "element-wise sum (residual connections; broadcasts)"

    def memory(self, node, shapes, out):
        # AddBackward0 saves nothing. With 3+ inputs each partial sum is a
        # transient tensor of the output's size, not counted here.
        return MemoryRule(layout="like_input")

    def emit(self, ctx, node, args, shapes):
        out = args[0]
        for a in args[1:]:
            out = ctx.call_function(operator.add, [out, a])
        return out


@register_op
class Sub(Elementwise):
    """``a - b`` (broadcasting)."""

    name = "sub"
    doc = "element-wise difference a - b (broadcasts)"
    torch_fn = operator.sub

    def memory(self, node, shapes, out):
        return MemoryRule(layout="like_input")  # SubBackward0 saves nothing


@register_op
class Mul(Elementwise):
    """Element-wise product; a ``Cx1x1`` gate broadcasts over ``CxHxW``
    (squeeze-and-excitation), a layer-scale ``gamma`` over tokens."""

    name = "mul"
    doc = "element-wise product (broadcasts: Cx1x1 squeeze-and-excitation gates)"
    torch_fn = operator.mul

    def rf(self, node, shapes, out):
        """Pointwise; a broadcast Cx1x1 input is read by every output unit (the
        receptive-field pass treats it as covering that input's whole field)."""
        return POINTWISE

    def memory(self, node, shapes, out):
        # MulBackward0 saves b when a requires grad and a when b does.
        return MemoryRule(saved_inputs=(0, 1), cross_saved=True, layout="like_input")


@register_op
class Div(Elementwise):
    """``a / b`` (true division, broadcasting)."""

    name = "div"
    doc = "element-wise quotient a / b (broadcasts)"
    torch_fn = operator.truediv

    def memory(self, node, shapes, out):
        # DivBackward0 saves b always (d/da = 1/b, d/db = -a/b^2) and a only when b
        # requires grad (measured on torch 2.14).
        return MemoryRule(saved_inputs=(0, 1), cross_saved=True, cross_inputs=(0,), layout="like_input")


@register_op
class Addcmul(Elementwise):
    """``torch.addcmul(a, b, c, value=v)``: ``a + v * b * c`` in one kernel,
    broadcasting (ResMLP's affine ``beta + alpha * x``, ConvNeXt-V2's global
    response normalisation)."""

    name = "addcmul"
    arity = (3, 3)
    doc = "a + value * b * c in one kernel (broadcasts: affine layers)"
    attrs = (Attr("value", "float", 1.0),)

    def macs(self, node, shapes, out, convention):
        return 2 * numel(out) if convention == "full" else 0  # a multiply-add and a multiply

    def memory(self, node, shapes, out):
        # AddcmulBackward0 saves c when b requires grad and b when c does (like mul).
        return MemoryRule(saved_inputs=(1, 2), cross_saved=True, cross_inputs=(1, 2), layout="like_input")

    def emit(self, ctx, node, args, shapes):
        import torch

        return ctx.call_function(torch.addcmul, args, {"value": node.attrs["value"]})


@register_op
class Concat(Op):
    """``torch.cat(inputs, dim)``; the default ``dim=1`` is channel
    concatenation of ``CxHxW`` inputs with equal HxW.

    Rules: MACs 0; a new tensor, nothing saved of size; receptive field
    :data:`POINTWISE` unless ``dim`` is spatial (one of the last two axes of a
    rank >= 3 tensor: each input then lands at its own offset), then
    :data:`GLOBAL`."""

    name = "concat"
    arity = (1, None)
    doc = "concatenate along a dim (default 1: channels; inception branches, dense blocks, skips)"
    attrs = (Attr("dim", "int", 1),)

    def infer_shape(self, node, shapes):
        _check_ranks(self, node, shapes)
        first = shapes[0]
        ax = axis(self, node, shapes, node.attrs["dim"], len(first))
        rest = lambda s: s[:ax] + s[ax + 1:]  # noqa: E731
        for s in shapes:
            if rest(s) != rest(first):
                if len(first) == 3 and ax == 0:
                    raise self.shape_error(
                        SpatialMismatchError, node, shapes,
                        f"spatial sizes differ between inputs {_names(node)} ({' vs '.join(fmt_shape(x[1:]) for x in shapes)})",
                        fix="crop or resize one side to the other's size",
                    )
                raise self.shape_error(ShapeError, node, shapes, f"inputs {_names(node)} differ outside dim {node.attrs['dim']}",
                                       fix="every other dim must be equal")
        return (*first[:ax], sum(s[ax] for s in shapes), *first[ax + 1:])

    def macs(self, node, shapes, out, convention):
        return 0

    def rf(self, node, shapes, out):
        ax = axis(self, node, shapes, node.attrs["dim"], len(out))
        return GLOBAL if is_spatial(ax, len(out)) else POINTWISE

    def memory(self, node, shapes, out):
        return MemoryRule()  # CatBackward0 keeps only the split sizes

    def emit(self, ctx, node, args, shapes):
        import torch

        return ctx.call_function(torch.cat, [list(args)], {"dim": node.attrs["dim"]})


@register_op
class Stack(Op):
    """``torch.stack(inputs, dim)``: inputs of equal shape along a new dim
    (``dim`` a torch dim of the result: ``1..R+1`` or negative).

    Rules: MACs 0; a new tensor, nothing saved; receptive field
    :data:`POINTWISE` when the new dim is not one of the result's last two axes,
    else :data:`GLOBAL`."""

    name = "stack"
    arity = (1, None)
    doc = "stack equal-shaped inputs along a new dim"
    attrs = (Attr("dim", "int", 1),)

    def _axis(self, node, shapes) -> int:
        return axis(self, node, shapes, node.attrs["dim"], len(shapes[0]) + 1)

    def infer_shape(self, node, shapes):
        _check_ranks(self, node, shapes)
        if any(s != shapes[0] for s in shapes):
            raise self.shape_error(ShapeError, node, shapes, f"inputs {_names(node)} differ in shape",
                                   fix="stack needs inputs of equal shape")
        ax = self._axis(node, shapes)
        return (*shapes[0][:ax], len(shapes), *shapes[0][ax:])

    def macs(self, node, shapes, out, convention):
        return 0

    def rf(self, node, shapes, out):
        return GLOBAL if is_spatial(self._axis(node, shapes), len(out)) else POINTWISE

    def memory(self, node, shapes, out):
        return MemoryRule()

    def emit(self, ctx, node, args, shapes):
        import torch

        return ctx.call_function(torch.stack, [list(args)], {"dim": node.attrs["dim"]})
