"""Graph inputs and ops that only reshape or pass data through."""
from __future__ import annotations

from archlab.errors import ShapeError
from archlab.ops.base import GLOBAL, POINTWISE, Attr, MemoryRule, Op, Saved, numel, register_op
from archlab.ops.dims import axis, view_strides


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
    """``torch.flatten(x, start_dim, end_dim)`` (torch dims of the batched
    tensor; the defaults flatten everything but the batch: CxHxW -> (C*H*W,)).

    Rules: a view when the input's strides allow one, else a copy (memory);
    receptive field :data:`POINTWISE` when the merged dims leave the last two
    axes of a rank >= 3 result in place, else :data:`GLOBAL`."""

    name = "flatten"
    doc = "merge dims start_dim..end_dim (default: all but the batch: CxHxW -> (C*H*W,))"
    attrs = (Attr("start_dim", "int", 1), Attr("end_dim", "int", -1))

    def _range(self, node, shapes) -> tuple[int, int]:
        rank = len(shapes[0])
        s = axis(self, node, shapes, node.attrs["start_dim"], rank, what="start_dim")
        e = axis(self, node, shapes, node.attrs["end_dim"], rank, what="end_dim")
        if s > e:
            raise self.shape_error(ShapeError, node, shapes,
                                   f"start_dim={node.attrs['start_dim']} comes after end_dim={node.attrs['end_dim']}")
        return s, e

    def infer_shape(self, node, shapes):
        (shape,) = shapes
        s, e = self._range(node, shapes)
        return (*shape[:s], numel(shape[s:e + 1]), *shape[e + 1:])

    def macs(self, node, shapes, out, convention):
        return 0

    def rf(self, node, shapes, out):
        """A flat vector has no spatial layout: each element's field is treated as
        the whole input (what a following linear layer sees). Merging leading
        dims of a rank >= 3 tensor keeps its last two (spatial) axes."""
        s, e = self._range(node, shapes)
        rank = len(shapes[0])
        if len(out) >= 3 and (s == e or e < rank - 2):
            return POINTWISE
        return GLOBAL

    def memory(self, node, shapes, out):
        return MemoryRule(alias=0, table_row=False)  # a view of its input (or a copy: view_strides)

    def view_strides(self, node, shapes, out, strides):
        return view_strides(shapes[0], strides, out)

    def emit(self, ctx, node, args, shapes):
        import torch

        a = node.attrs
        kwargs = {"start_dim": a["start_dim"]} if a["end_dim"] == -1 else {"start_dim": a["start_dim"], "end_dim": a["end_dim"]}
        return ctx.call_function(torch.flatten, args, kwargs)


@register_op
class Reshape(Op):
    """``x.reshape(x.shape[0], *shape)``: ``shape`` is the batch-excluded target
    with at most one ``-1`` (inferred).

    Rules: a view when the input's strides allow one (PyTorch's
    ``computeStride``), else a copy: a reshape after a permute (channel
    shuffle, merging attention heads) allocates. Receptive field
    :data:`POINTWISE` when input and output have rank >= 3 and the same last two
    (spatial) axes (ShuffleNet's ``(C, H, W) -> (g, C/g, H, W)``), else
    :data:`GLOBAL`."""

    name = "reshape"
    doc = "reshape the sample (batch kept): shape with at most one -1"
    attrs = (Attr("shape", "ints"),)

    def infer_shape(self, node, shapes):
        (src,) = shapes
        target = node.attrs["shape"]
        if not target:
            raise self.shape_error(ShapeError, node, shapes, "shape [] has no dimension", fix="give the sample's new shape")
        if any(d == 0 or d < -1 for d in target) or list(target).count(-1) > 1:
            raise self.shape_error(ShapeError, node, shapes, f"shape {list(target)} must be positive sizes and at most one -1")
        known = numel([d for d in target if d != -1])
        n = numel(src)
        if -1 in target:
            if n % known:
                raise self.shape_error(ShapeError, node, shapes,
                                       f"{n} elements do not divide into shape {list(target)}")
            return tuple(n // known if d == -1 else d for d in target)
        if known != n:
            raise self.shape_error(ShapeError, node, shapes, f"shape {list(target)} holds {known} elements, "
                                   f"the input {n}", fix="sizes must multiply to the input's element count")
        return tuple(target)

    def macs(self, node, shapes, out, convention):
        return 0

    def rf(self, node, shapes, out):
        src = shapes[0]
        return POINTWISE if len(src) >= 3 and len(out) >= 3 and src[-2:] == out[-2:] else GLOBAL

    def memory(self, node, shapes, out):
        return MemoryRule(alias=0, table_row=False)

    def view_strides(self, node, shapes, out, strides):
        return view_strides(shapes[0], strides, out)

    def emit(self, ctx, node, args, shapes):
        return ctx.call_function(reshape, [args[0], tuple(node.meta["shape"])])


def reshape(x, shape):
    """``x.reshape(x.shape[0], *shape)`` (the batch kept)."""
    return x.reshape(x.shape[0], *shape)


@register_op
class Permute(Op):
    """``x.permute(dims)``: ``dims`` is the full torch permutation, batch first
    (``[0, 2, 3, 1]``: CxHxW -> HxWxC).

    Rules: a view (strides permuted); receptive field :data:`POINTWISE` when the
    last two axes stay in place (a rank >= 3 tensor's spatial axes), else
    :data:`GLOBAL`."""

    name = "permute"
    doc = "permute dims (the torch permutation, 0 first: [0, 2, 3, 1])"
    attrs = (Attr("dims", "ints"),)

    def _perm(self, node, shapes) -> list[int]:
        """The permutation of IR axes (batch left out)."""
        rank = len(shapes[0])
        dims = node.attrs["dims"]
        if len(dims) != rank + 1:
            raise self.shape_error(ShapeError, node, shapes, f"dims {list(dims)} must list all {rank + 1} torch dims",
                                   fix=f"give a permutation of 0..{rank} with 0 (the batch) first")
        norm = [d + rank + 1 if -(rank + 1) <= d < 0 else d for d in dims]
        if sorted(norm) != list(range(rank + 1)):
            raise self.shape_error(ShapeError, node, shapes, f"dims {list(dims)} is not a permutation of 0..{rank}")
        if norm[0] != 0:
            raise self.shape_error(ShapeError, node, shapes, f"dims {list(dims)} moves the batch dimension",
                                   fix="keep 0 (the batch) first")
        return [d - 1 for d in norm[1:]]

    def infer_shape(self, node, shapes):
        return tuple(shapes[0][p] for p in self._perm(node, shapes))

    def macs(self, node, shapes, out, convention):
        return 0

    def rf(self, node, shapes, out):
        perm, rank = self._perm(node, shapes), len(out)
        return POINTWISE if rank >= 3 and perm[-2:] == [rank - 2, rank - 1] else GLOBAL

    def memory(self, node, shapes, out):
        return MemoryRule(alias=0, table_row=False)

    def view_strides(self, node, shapes, out, strides):
        return tuple(strides[p] for p in self._perm(node, shapes))

    def emit(self, ctx, node, args, shapes):
        import torch

        return ctx.call_function(torch.permute, [args[0], tuple(node.attrs["dims"])])


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
