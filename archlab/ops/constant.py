"""Constants and the ops that read them: a tensor that depends on neither the
model's input nor a parameter (Swin's shift mask, its relative-position index),
a gather of a tensor by such an index (``table[index]``), and a cyclic shift
(``torch.roll``, Swin's shifted windows).

A ``constant`` holds its value in its attributes (``dtype``, and ``data``: the
row-major bytes, zlib-compressed and base64-encoded), so a graph stays
serialisable and torch-free; :func:`encode` and :func:`decode_numpy` convert.
"""
from __future__ import annotations

import base64
import zlib

from archlab.errors import ShapeError
from archlab.ops.base import GLOBAL, POINTWISE, Attr, MemoryRule, Op, numel, register_op
from archlab.ops.dims import axes, axis, is_spatial
from archlab.ops.stored import StoredTensor

DTYPES = ("float32", "float64", "float16", "int64", "int32", "bool")
"""The element types a ``constant`` holds (NumPy names)."""


def encode(raw: bytes) -> str:
    """Row-major element bytes as a ``constant``'s ``data`` attribute."""
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def decode_numpy(attrs: dict):
    """A ``constant``'s value as a NumPy array of its ``shape`` (without the batch)."""
    import numpy as np

    raw = zlib.decompress(base64.b64decode(attrs["data"]))
    return np.frombuffer(raw, dtype=attrs["dtype"]).reshape(tuple(attrs["shape"])).copy()


def _check_data(op, node, shapes) -> None:
    """``data`` decodes to exactly ``shape`` elements of ``dtype`` (a file edited by hand may not)."""
    import numpy as np

    try:
        raw = zlib.decompress(base64.b64decode(node.attrs["data"], validate=True))
    except (ValueError, zlib.error) as e:
        raise op.shape_error(ShapeError, node, shapes, f"data is not base64 of zlib-compressed bytes ({e})",
                             fix="write data with archlab.ops.constant.encode(array.tobytes())") from None
    want = numel(node.attrs["shape"]) * np.dtype(node.attrs["dtype"]).itemsize
    if len(raw) != want:
        raise op.shape_error(ShapeError, node, shapes, f"data holds {len(raw):,} bytes where shape and dtype need "
                             f"{want:,}", fix="write data for every element of shape")


@register_op
class Constant(StoredTensor):
    """A tensor fixed when the graph is built: ``shape`` (batch excluded),
    ``dtype`` and ``data`` (see the module docstring). ``persistent``: the
    compiled module keeps it as a persistent buffer at the node's name, so its
    ``state_dict`` has the key a model's persistent buffer had
    (``features.1.0.attn.relative_position_index``); otherwise a non-persistent
    buffer. Its one input gives only the batch size (``input_reads``), as for
    ``parameter``.

    Rules: params 0 (a buffer, counted by ``buffers``); MACs 0; the output is the
    buffer expanded over the batch (no copy; ``allocates=False``); receptive
    field: it reads no input pixel (:data:`POINTWISE`, like ``parameter``)."""

    name = "constant"
    doc = "a fixed tensor (Swin's shift mask, an index); its input gives the batch size"
    attrs = (Attr("shape", "ints", positive=True), Attr("dtype", "str"), Attr("data", "str"),
             Attr("persistent", "bool", False))
    empty_shape_fix = "give shape [1] for a scalar"

    def check_attrs(self, node, shapes):
        dtype = node.attrs["dtype"]
        if dtype not in DTYPES:
            raise self.shape_error(ShapeError, node, shapes, f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        _check_data(self, node, shapes)

    def buffers(self, node, shapes):
        return numel(node.attrs["shape"])

    def emit(self, ctx, node, args, shapes):
        import torch

        from archlab.ops.attention import expand_parameter

        value = torch.from_numpy(decode_numpy(node.attrs))
        buf = ctx.buffer(node, value, persistent=node.attrs["persistent"])
        return ctx.call_function(expand_parameter, [buf, self.batch_size(ctx, node, args[0]),
                                                    tuple(node.attrs["shape"])])


@register_op
class IndexSelect(Op):
    """``x.index_select(dim, index)`` (``table[index]`` for ``dim`` 1): the
    entries of ``x`` along torch dim ``dim`` at the positions an integer
    ``index`` lists, in its order, repeats allowed; an n-D index puts its shape
    in place of ``dim`` (``table[:, index]``, as torch's indexing does). ``index`` must be the same
    for every sample (a ``constant``); the compiled op reads sample 0's.

    Rules: MACs 0 in every convention (FlopCounterMode and fvcore count no
    indexing); memory: a new tensor; autograd saves only the index, which is
    the constant's buffer (no activation memory); receptive field: positions are reordered arbitrarily, so
    a gather along a spatial axis is :data:`GLOBAL`, along another axis
    :data:`POINTWISE`."""

    name = "index_select"
    arity = (2, 2)
    doc = "x.index_select(dim, index): gather along one dim by a constant integer index (x[index], x[:, index])"
    attrs = (Attr("dim", "int"),)

    def infer_shape(self, node, shapes):
        x, index = shapes
        ax = axis(self, node, shapes, node.attrs["dim"], len(x))
        return (*x[:ax], *index, *x[ax + 1:])  # an n-D index: torch's x[:, index] (LeViT's attention biases)

    def macs(self, node, shapes, out, convention):
        return 0

    def rf(self, node, shapes, out):
        ax = axis(self, node, shapes, node.attrs["dim"], len(shapes[0]))
        return GLOBAL if is_spatial(ax, len(out)) else POINTWISE

    def memory(self, node, shapes, out):
        return MemoryRule()

    def emit(self, ctx, node, args, shapes):
        return ctx.call_function(index_select_first, [args[0], node.attrs["dim"], args[1]])


def index_select_first(x, dim: int, index):
    """``x.index_select(dim, index[0])``: the index is the same for every sample;
    an n-D index gives its shape in place of ``dim`` (as ``x[:, index]`` does)."""
    i = index[0]
    if i.dim() == 1:
        return x.index_select(dim, i)
    return x.index_select(dim, i.reshape(-1)).view(*x.shape[:dim], *i.shape, *x.shape[dim + 1:])


@register_op
class Roll(Op):
    """``torch.roll(x, shifts, dims)``: a cyclic shift by ``shifts[i]`` along
    torch dim ``dims[i]`` (Swin's shifted windows).

    Rules: shape unchanged; MACs 0 in every convention; memory: a new dense
    tensor, nothing saved (the backward rolls back); receptive field: a roll
    along a spatial axis wraps positions around the border, which no window
    rule expresses, so it is :data:`GLOBAL` (an honest over-estimate: each
    output reads one input, but possibly from the opposite edge); along other
    axes :data:`POINTWISE`."""

    name = "roll"
    doc = "torch.roll(x, shifts, dims): cyclic shift along dims (Swin's shifted windows)"
    attrs = (Attr("shifts", "ints"), Attr("dims", "ints"))

    def infer_shape(self, node, shapes):
        a = node.attrs
        if len(a["shifts"]) != len(a["dims"]):
            raise self.shape_error(ShapeError, node, shapes, f"{len(a['shifts'])} shifts for {len(a['dims'])} dims",
                                   fix="give one shift per dim")
        axes(self, node, shapes, a["dims"], len(shapes[0]))
        return shapes[0]

    def macs(self, node, shapes, out, convention):
        return 0

    def rf(self, node, shapes, out):
        moved = axes(self, node, shapes, node.attrs["dims"], len(out))
        return GLOBAL if any(is_spatial(ax, len(out)) and s for ax, s in zip(moved, node.attrs["shifts"])) \
            else POINTWISE

    def memory(self, node, shapes, out):
        return MemoryRule()

    def emit(self, ctx, node, args, shapes):
        import torch

        a = node.attrs
        return ctx.call_function(torch.roll, [args[0], tuple(a["shifts"]), tuple(a["dims"])])
