"""Ops that exist for search spaces rather than for hand-designed networks.

``zero`` is NAS-Bench-201's ``none`` edge (Dong & Yang, ICLR 2020, arXiv:2001.00326):
an edge that is present in the cell but passes nothing on. NAS-Bench-201
implements it as its ``Zero`` module, whose stride-1 forward is ``x.mul(0.)``;
keeping it as a node (instead of deleting the edge) keeps the cell's structure,
its names and the parameters of convolutions that only feed it, exactly as the
benchmark's networks have them.
"""
from __future__ import annotations

from archlab.errors import ShapeError
from archlab.ops.base import POINTWISE, MemoryRule, Op, register_op


@register_op
class Zero(Op):
    """``x.mul(0.)``: a tensor of zeros with the input's shape (NAS-Bench-201's
    ``none`` op at stride 1).

    Rules:
        * shape: the input's; no parameters or buffers.
        * MACs: 0 in every convention. The result is a constant (NAS-Bench-201's
          own FLOP count gives ``Zero`` none); ``x.mul(0.)`` is only one way to
          make it with the input's shape, dtype and device.
        * receptive field: :data:`POINTWISE`. The output does not depend on the
          input's finite values, but ``x.mul(0.)`` still reads each one (a NaN or
          inf in ``x`` gives NaN at the same position), so the pointwise rule
          states what the compiled op touches; a field through a ``zero`` edge
          is an upper bound on what can change the output.
        * memory: the output is allocated (no alias); ``MulBackward0`` by a
          Python scalar saves nothing of size (checked with
          ``torch.autograd.graph.saved_tensors_hooks`` on torch 2.14). The input
          is read, so it stays live until the op has run.
    """

    name = "zero"
    doc = "zeros of the input's shape: x.mul(0.) (NAS-Bench-201's 'none' edge)"

    def infer_shape(self, node, shapes):
        (shape,) = shapes
        if not shape:
            raise self.shape_error(ShapeError, node, shapes, "zero needs a tensor input with a shape")
        return shape

    def macs(self, node, shapes, out, convention):
        return 0

    def rf(self, node, shapes, out):
        return POINTWISE

    def memory(self, node, shapes, out):
        return MemoryRule()

    def emit(self, ctx, node, args, shapes):
        return ctx.call_function(zero, args)


def zero(x):
    """``x.mul(0.)``, as NAS-Bench-201's ``Zero.forward`` at stride 1 (NaN stays NaN)."""
    return x.mul(0.0)
