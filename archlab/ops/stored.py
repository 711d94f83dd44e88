"""What ``parameter`` and ``constant`` share: a tensor the compiled module
stores (a learned parameter, a buffer) entering the graph as a view expanded
over the batch. Each op keeps its own attributes, weight count and ``emit``;
this base holds the rules that are the same for both."""
from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from archlab.errors import ShapeError
from archlab.ops.base import POINTWISE, MemoryRule, Op


class StoredTensor(Op):
    """Base of ops whose output is a stored tensor viewed as ``(batch, *shape)``.

    Contract shared by the subclasses (not registered itself):
        * attribute ``shape``: the batch-excluded output shape, at least one
          dim (``[]`` is refused with :attr:`empty_shape_fix` as the fix);
          :meth:`check_attrs` checks the subclass's other attributes.
        * the one input gives only the batch size (``input_reads``): no field
          passes through it and it need not be live.
        * not ``shareable``: the tensor is the node's own, so a second node of
          it is a second tensor.
        * rules: MACs 0 in every convention; receptive field :data:`POINTWISE`
          (it reads no input pixel, so ``x + pos_embedding`` keeps ``x``'s
          field); memory: a view of the stored tensor, so it allocates nothing
          and has no row of its own (``allocates=False, table_row=False``).

    Subclasses set ``name``, ``doc``, ``attrs`` and :attr:`empty_shape_fix`, and
    define ``params`` or ``buffers`` and ``emit`` (which may use
    :meth:`batch_size`).
    """

    shareable = False  # its tensor is its own: a second node of it is a second tensor
    input_reads: ClassVar[Mapping[int, str]] = {0: "shape"}  # the input gives only the batch size
    empty_shape_fix: ClassVar[str] = ""  # the fix offered for shape []

    def infer_shape(self, node, shapes):
        shape = tuple(node.attrs["shape"])
        if not shape:
            raise self.shape_error(ShapeError, node, shapes, "shape [] has no dimension", fix=self.empty_shape_fix)
        self.check_attrs(node, shapes)
        return shape

    def check_attrs(self, node, shapes) -> None:
        """Called by :meth:`infer_shape` once ``shape`` is known to be non-empty:
        raise a :class:`~archlab.errors.ShapeError` for another attribute that does
        not fit. By default nothing to check."""

    def macs(self, node, shapes, out, convention):
        return 0

    def rf(self, node, shapes, out):
        return POINTWISE

    def memory(self, node, shapes, out):
        return MemoryRule(allocates=False, table_row=False)

    def batch_size(self, ctx, node, ref):
        """For ``emit``: an fx node reading ``ref.size(0)``, inserted right after
        ``ref`` so that the reference is not kept alive until this node runs."""
        from archlab.torchio.compile import fx_name

        with ctx.fx_graph.inserting_after(ref):
            return ctx.fx_graph.create_node("call_method", "size", (ref, 0), {}, name=fx_name(node.name) + "_batch")
