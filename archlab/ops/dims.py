"""Dimension arithmetic shared by ops of any rank: torch dims of the batched
tensor, NumPy broadcasting, and the strides of views.

Attributes that name a dimension use the torch dims of the *batched* tensor, as
the PyTorch code they come from writes them: for an IR shape of rank ``R`` (batch
excluded) the valid dims are ``1 .. R`` and ``-R .. -1`` (``-1`` is the last).
Dim 0 (or ``-(R + 1)``) is the batch, which no op may touch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from archlab.errors import ShapeError

if TYPE_CHECKING:  # pragma: no cover
    from archlab.ops.base import Op, Shape


def axis(op: Op, node, shapes: Sequence[Shape], dim: int, rank: int, *, what: str = "dim") -> int:
    """The IR axis (0-based, batch excluded) that torch dim ``dim`` names in a
    tensor of IR rank ``rank``.

    Raises:
        ShapeError: naming the node, when ``dim`` is the batch or out of range.
    """
    if dim == 0 or dim == -(rank + 1):
        raise op.shape_error(
            ShapeError, node, shapes, f"{what}={dim} is the batch dimension, which {op.name} cannot touch",
            fix=f"name a dim of the sample: 1..{rank} or -{rank}..-1 (torch dims of the batched tensor)",
        )
    if not -rank <= dim <= rank:
        raise op.shape_error(
            ShapeError, node, shapes, f"{what}={dim} is out of range for a rank-{rank} sample "
            f"(torch dims 1..{rank} or -{rank}..-1)",
        )
    return dim - 1 if dim > 0 else rank + dim


def axes(op: Op, node, shapes: Sequence[Shape], dims: Sequence[int], rank: int, *, what: str = "dims") -> list[int]:
    """:func:`axis` of each of ``dims``, refusing repeats and an empty list."""
    if not dims:
        raise op.shape_error(ShapeError, node, shapes, f"{what} is empty", fix="name at least one dim")
    out = [axis(op, node, shapes, d, rank, what=what) for d in dims]
    if len(set(out)) != len(out):
        raise op.shape_error(ShapeError, node, shapes, f"{what}={list(dims)} names a dim twice")
    return out


def is_spatial(ax: int, rank: int) -> bool:
    """Whether IR axis ``ax`` is one of the two spatial axes (the last two) of a
    rank >= 3 tensor (see :mod:`archlab.analysis.receptive_field`)."""
    return rank >= 3 and ax >= rank - 2


def broadcast(op: Op, node, shapes: Sequence[Shape]) -> Shape:
    """NumPy broadcasting of same-rank shapes: each dim equal or 1 on one side.

    Raises:
        ShapeError: different ranks, or a dim that does not broadcast (for
            ``CxHxW`` inputs a :class:`ChannelMismatchError` or
            :class:`SpatialMismatchError` with today's fixes).
    """
    from archlab.errors import ChannelMismatchError, SpatialMismatchError

    names = ", ".join(f"'{i}'" for i in node.inputs[:8])
    rank = len(shapes[0])
    if not rank or any(len(s) != rank for s in shapes):
        raise op.shape_error(
            ShapeError, node, shapes, f"inputs {names} have different ranks" if rank else f"inputs {names} have no dimension",
            fix="reshape one side so both have the same rank (a size-1 dim broadcasts)",
        )
    out = []
    for a in range(rank):
        sizes = {s[a] for s in shapes} - {1}
        if len(sizes) > 1:
            if rank == 3 and a == 0:
                fix = {"add": "a residual branch that changes width needs a 1x1 projection on the shortcut"}.get(op.name)
                raise op.shape_error(ChannelMismatchError, node, shapes, f"channels differ between inputs {names}", fix=fix)
            if rank == 3:
                fix = ("only a Cx1x1 gate broadcasts" if op.name == "mul"
                       else "a strided branch needs a strided shortcut (or crop/resize one side)")
                raise op.shape_error(SpatialMismatchError, node, shapes,
                                     f"spatial sizes differ between inputs {names}", fix=fix)
            raise op.shape_error(
                ShapeError, node, shapes, f"dim {a + 1} differs between inputs {names} "
                f"({' vs '.join(str(s[a]) for s in shapes)}) and is not 1 on one side",
                fix="a dim broadcasts only from size 1",
            )
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def dense_strides(shape: Shape) -> tuple[int, ...]:
    """Row-major strides (elements) of ``shape``."""
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= s
    return tuple(reversed(out))


def view_strides(shape: Shape, strides: Sequence[int], new: Shape) -> tuple[int, ...] | None:
    """The strides of ``new`` viewing a tensor of ``shape`` and ``strides``, or
    ``None`` when no view exists and ``reshape`` copies: PyTorch's
    ``at::detail::computeStride``. The batch dim is left out on both sides: it
    keeps its size, so it is a chunk of its own or splits off the chunk it is in,
    and the answer is the same."""
    if tuple(shape) == tuple(new):
        return tuple(strides)
    out = [0] * len(new)
    view_d = len(new) - 1
    base = strides[-1]  # stride of the innermost dim of the current contiguous chunk
    tensor_numel = view_numel = 1
    for d in range(len(shape) - 1, -1, -1):
        tensor_numel *= shape[d]
        if d == 0 or (shape[d - 1] != 1 and strides[d - 1] != tensor_numel * base):
            while view_d >= 0 and (view_numel < tensor_numel or new[view_d] == 1):
                out[view_d] = view_numel * base
                view_numel *= new[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return None
            if d > 0:
                base, tensor_numel, view_numel = strides[d - 1], 1, 1
    return tuple(out) if view_d == -1 else None


def permuted_order(shape: Shape, strides: Sequence[int]) -> list[int]:
    """Dims ordered outermost first by stride (ties keep their order): the
    layout an element-wise kernel gives its output (TensorIterator)."""
    return sorted(range(len(shape)), key=lambda d: -strides[d])


def dense_in_order(shape: Shape, order: Sequence[int]) -> tuple[int, ...]:
    """Strides of a dense tensor of ``shape`` laid out in ``order`` (outermost first)."""
    out = [0] * len(shape)
    acc = 1
    for d in reversed(order):
        out[d] = acc
        acc *= shape[d]
    return tuple(out)
