"""Graph inputs and ops that only reshape or pass data through."""
from __future__ import annotations

from archlab.errors import ShapeError
from archlab.ops.base import GLOBAL, POINTWISE, Attr, MemoryRule, Op, Saved, numel, register_op


@register_op
class Input(Op):
    """A graph input; ``shape`` excludes the batch dimension (``[3, 224, 224]``)."""

    name = "input"
    arity = (0, 0)
    doc = "graph input of the given shape (batch excluded)"
    attrs = (Attr("shape", "ints", positive=True),)

    def infer_shape(self, node, shapes):
        shape = tuple(node.attrs["shape"])
        if not shape:
            raise self.shape_error(ShapeError, node, shapes, "shape [] has no dimension",
                                   fix="give the sample's shape without the batch, e.g. [3, 224, 224]")
        return shape

    def macs(self, node, shapes, out, convention):
        return 0

    def rf(self, node, shapes, out):
        return POINTWISE

    def memory(self, node, shapes, out):
        return MemoryRule()  # the input tensor, live until its last consumer


@register_op
class Flatten(Op):
    """``torch.flatten(x, 1)``: CxHxW -> (C*H*W,)."""

    name = "flatten"
    doc = "flatten everything but the batch: CxHxW -> (C*H*W,)"

    def infer_shape(self, node, shapes):
        n = 1
        for s in shapes[0]:
            n *= s
        return (n,)

    def macs(self, node, shapes, out, convention):
        return 0

    def rf(self, node, shapes, out):
        """A flat vector has no spatial layout: each element's field is treated as
        the whole input (what a following linear layer sees)."""
        return GLOBAL

    def memory(self, node, shapes, out):
        return MemoryRule(alias=0, table_row=False)  # a view of its input

    def emit(self, ctx, node, args, shapes):
        import torch

        return ctx.call_function(torch.flatten, args, {"start_dim": 1})


@register_op
class Dropout(Op):
    """``torch.nn.Dropout`` (identity in eval mode)."""

    name = "dropout"
    doc = "dropout with probability p (identity in eval mode)"
    attrs = (Attr("p", "float", 0.5),)

    def infer_shape(self, node, shapes):
        if not 0.0 <= node.attrs["p"] <= 1.0:
            raise self.shape_error(ShapeError, node, shapes, f"p={node.attrs['p']} is not a probability")
        return shapes[0]

    def macs(self, node, shapes, out, convention):
        return 0  # identity at inference

    def rf(self, node, shapes, out):
        return POINTWISE

    def memory(self, node, shapes, out):
        """Eval: returns its input. Training on CPU (``_dropout``): ``input * noise``
        with a noise tensor in the input's dtype, which MulBackward0 saves; on
        CUDA ``native_dropout`` saves a bool mask instead. p=0 returns the input;
        p=1 multiplies by a 0-dim zero."""
        p = node.attrs["p"]
        if p == 0.0:
            return MemoryRule(alias=0, table_row=False)
        mask = Saved("zero", 1, per_sample=False) if p == 1.0 else Saved("mask", numel(out))
        return MemoryRule(alias=0, train_alias=False, saved_extra=(mask,), table_row=False)

    def emit(self, ctx, node, args, shapes):
        import torch.nn as nn

        return ctx.call_module(node, nn.Dropout(node.attrs["p"]), args)
