"""Attention and free parameters: scaled dot-product attention, PyTorch's
multi-head self-attention module, and learned tensors that enter the graph
(ViT's class token and position embedding, layer-scale gammas).

Memory rules follow what PyTorch 2.14 runs on the CPU, measured with
``saved_tensors_hooks`` (training) and :func:`archlab.analysis.measure.tensor_peak_bytes`
(inference): ``scaled_dot_product_attention`` takes the fused flash kernel when
the inputs are 3-D or 4-D (IR rank 2 or 3) and ``v`` has ``q``'s head size,
else the math path (two matmuls around a softmax).
"""
from __future__ import annotations

import operator

from archlab.errors import ChannelMismatchError, ShapeError, fmt_shape
from archlab.ops.base import GLOBAL, Attr, MemoryRule, Op, Saved, numel, register_op
from archlab.ops.stored import StoredTensor


def _flash(q, v) -> bool:
    """Whether PyTorch's CPU dispatch takes the flash kernel for these shapes."""
    return len(q) <= 3 and q[-1] == v[-1]


@register_op
class Sdpa(Op):
    """``F.scaled_dot_product_attention(q, k, v, is_causal, scale)``: ``q (..., L,
    E)``, ``k (..., S, E)``, ``v (..., S, Ev)`` with equal leading dims (batch x
    heads) -> ``(..., L, Ev)``; ``scale`` ``None`` is ``1/sqrt(E)``.

    Rules (``h`` = product of the leading dims):
        * MACs: torchvision ``h (L S E + L S Ev)`` (FlopCounterMode's rule for the
          op, on the meta device and on the CPU; a causal mask does not change
          it); fvcore 0 (it skips the op); full: the torchvision figure plus
          ``3 h L S`` for the softmax and ``h (L + S) E`` for scaling q and k.
        * receptive field: :data:`GLOBAL`.
        * memory: flash kernel: autograd saves q, k, v, the output and a float32
          log-sum-exp per query row, which the kernel also returns at inference.
          Math path: it saves v, the scaled q and k and the attention weights
          (softmax's output, which the second matmul saves as a view); at
          inference the scores and weights are scratch (and ``h L`` more
          elements when ``Ev != E``, measured), plus the ``L x S`` float mask a
          causal one builds once for the batch. With a ``mask`` (an additive float
          tensor broadcasting to the scores; Swin's and MaxViT's relative-position
          bias) autograd takes the math path (measured, the mask requiring grad);
          inference runs the flash kernel where it would without a mask.
    """

    name = "sdpa"
    arity = (3, 4)
    doc = "scaled dot-product attention softmax(q k^T * scale [+ mask]) v"
    attrs = (Attr("is_causal", "bool", False), Attr("scale", "float", None))

    def infer_shape(self, node, shapes):
        q, k, v = shapes[:3]
        if len(shapes) == 4:
            mask, scores = shapes[3], (*q[:-1], k[-2])
            if len(mask) != len(q) or any(m not in (1, s) for m, s in zip(mask, scores)):
                raise self.shape_error(ShapeError, node, shapes, f"the mask does not broadcast to the scores "
                                       f"{fmt_shape(scores)}", fix="give the mask q's rank, with 1s to broadcast")
            if node.attrs["is_causal"]:
                raise self.shape_error(ShapeError, node, shapes, "is_causal with a mask", fix="give one of them")
        if len(q) < 2 or not len(q) == len(k) == len(v):
            raise self.shape_error(ShapeError, node, shapes, "q, k and v need the same rank >= 2 ((..., L, E))",
                                   fix="split heads with reshape/permute so q, k, v are (..., L, E)")
        if not q[:-2] == k[:-2] == v[:-2]:
            raise self.shape_error(ShapeError, node, shapes, "q, k and v differ in their leading (batch x head) dims")
        if k[-1] != q[-1]:
            raise self.shape_error(ShapeError, node, shapes, f"k's head size {k[-1]} is not q's {q[-1]}")
        if k[-2] != v[-2]:
            raise self.shape_error(ShapeError, node, shapes, f"k has {k[-2]} positions, v {v[-2]}")
        return (*q[:-1], v[-1])

    def macs(self, node, shapes, out, convention):
        q, k, v = shapes[:3]
        h, L, S, E, Ev = numel(q[:-2]), q[-2], k[-2], q[-1], v[-1]
        if convention == "fvcore":
            return 0
        n = h * L * S * (E + Ev)
        return n + (3 * h * L * S + h * (L + S) * E if convention == "full" else 0)

    def rf(self, node, shapes, out):
        return GLOBAL

    def memory(self, node, shapes, out):
        q, k, v = shapes[:3]
        h, L, S, E, Ev = numel(q[:-2]), q[-2], k[-2], q[-1], v[-1]
        if _flash(q, v) and len(shapes) == 3:
            lse = (Saved("logsumexp", h * L, dtype="float32"),)
            return MemoryRule(saved_inputs=(0, 1, 2), saved_output=True, saved_extra=lse, scratch=lse)
        saved = (Saved("q_scaled", h * L * E), Saved("k_scaled", h * S * E), Saved("weights", h * L * S))
        scratch = (Saved("scores", h * L * S), Saved("weights", h * L * S)) \
            + ((Saved("rows", h * L),) if E != Ev else ()) \
            + ((Saved("causal_mask", L * S, per_sample=False),) if node.attrs["is_causal"] else ())
        if _flash(q, v):  # with a mask: the flash kernel at inference, the math path in training
            scratch = (Saved("logsumexp", h * L, dtype="float32"),)
        return MemoryRule(saved_inputs=(2,), saved_extra=saved, scratch=scratch)

    def emit(self, ctx, node, args, shapes):
        import torch.nn.functional as F

        a = node.attrs
        kwargs = {"is_causal": a["is_causal"]} if a["scale"] is None else {"is_causal": a["is_causal"], "scale": a["scale"]}
        if len(args) == 4:
            kwargs["attn_mask"] = args[3]
        return ctx.call_function(F.scaled_dot_product_attention, args[:3], kwargs)


@register_op
class MultiheadAttention(Op):
    """``torch.nn.MultiheadAttention(embed_dim, num_heads, bias, batch_first=True)``
    as self-attention on ``(L, E)`` tokens (the input is query, key and value;
    ``need_weights=False``). State-dict keys: ``in_proj_weight``,
    ``in_proj_bias``, ``out_proj.weight``, ``out_proj.bias``.

    Rules:
        * params: ``4 E^2`` (+ ``4 E`` with bias).
        * MACs: torchvision ``4 L E^2`` (q, k, v and output projections) ``+ 2 L^2
          E`` (attention), FlopCounterMode on the meta device (on the CPU in eval
          mode the fused fast path hides the products from it); fvcore ``4 L
          E^2`` (it skips the attention); full: torchvision plus ``4 L E`` for
          the biases and ``3 h L^2`` for the softmax.
        * receptive field: :data:`GLOBAL`.
        * memory: inference with bias runs the fused fast path (no scratch);
          without bias the unfused path keeps ``5 L E`` elements of scratch
          (q, k, v, attention and its transpose). Training (batch >= 2; a batch
          of 1 saves the input itself instead of its copy): autograd saves a
          contiguous copy of the input (batch-first tokens, transposed), the
          packed q/k/v projection, the attention output (which the output
          projection saves too, as a view) and a float32 log-sum-exp per head
          and token.
    """

    name = "multihead_attention"
    doc = "torch.nn.MultiheadAttention self-attention on (L, E) tokens"
    attrs = (Attr("embed_dim", "int", positive=True), Attr("num_heads", "int", positive=True), Attr("bias", "bool", True))

    def infer_shape(self, node, shapes):
        (shape,) = shapes
        a = node.attrs
        if len(shape) != 2:
            raise self.shape_error(ShapeError, node, shapes, "multihead_attention needs (L, E) tokens",
                                   fix="flatten the spatial dims and permute to (L, E)")
        if shape[1] != a["embed_dim"]:
            raise self.shape_error(ChannelMismatchError, node, shapes,
                                   f"the tokens have {shape[1]} features, embed_dim is {a['embed_dim']}")
        if a["embed_dim"] % a["num_heads"]:
            raise self.shape_error(ShapeError, node, shapes,
                                   f"num_heads={a['num_heads']} must divide embed_dim={a['embed_dim']}")
        return shape

    def params(self, node, shapes):
        e = node.attrs["embed_dim"]
        return 4 * e * e + (4 * e if node.attrs["bias"] else 0)

    def macs(self, node, shapes, out, convention):
        L, E = shapes[0]
        n = 4 * L * E * E
        if convention == "fvcore":
            return n
        n += 2 * L * L * E
        if convention == "full":
            n += (4 * L * E if node.attrs["bias"] else 0) + 3 * node.attrs["num_heads"] * L * L
        return n

    def rf(self, node, shapes, out):
        return GLOBAL

    def memory(self, node, shapes, out):
        L, E = shapes[0]
        saved = (Saved("input_copy", L * E), Saved("qkv", 3 * L * E), Saved("attention", L * E),
                 Saved("logsumexp", node.attrs["num_heads"] * L, dtype="float32"))
        scratch = () if node.attrs["bias"] else (Saved("unfused", 5 * L * E),)
        return MemoryRule(saved_extra=saved, scratch=scratch)

    def emit(self, ctx, node, args, shapes):
        import torch.nn as nn

        a = node.attrs
        mod = nn.MultiheadAttention(a["embed_dim"], a["num_heads"], bias=a["bias"], batch_first=True)
        x = args[0]
        out = ctx.call_module(node, mod, [x, x, x], {"need_weights": False})
        return ctx.call_function(operator.getitem, [out, 0])


@register_op
class Parameter(StoredTensor):
    """A learned tensor entering the graph: ViT's class token and position
    embedding, a layer-scale gamma. ``shape`` is its batch-excluded IR shape,
    ready to broadcast (``[1, 768]`` for a class token); ``stored`` its shape in
    the state dict (``[1, 1, 768]``), with as many elements (``None``: ``shape``).
    Its one input gives only the batch size (``input_reads``): no field passes
    through it and it need not be live.

    Rules: params ``prod(shape)``; MACs 0; the output is a view of the parameter
    expanded over the batch (``p.reshape(1, *shape).expand(batch, *shape)``), so
    it allocates nothing and saving it costs nothing (``allocates=False``); the
    receptive-field pass treats it as a constant (it depends on no input pixel,
    so ``x + pos_embedding`` keeps ``x``'s field)."""

    name = "parameter"
    doc = "a learned tensor (class token, position embedding); its input gives the batch size"
    attrs = (Attr("shape", "ints", positive=True), Attr("stored", "ints", None, positive=True))
    empty_shape_fix = "give the batch-excluded shape, e.g. [1, 768] for a class token"

    def check_attrs(self, node, shapes):
        shape, stored = node.attrs["shape"], node.attrs["stored"]
        if stored is not None and numel(stored) != numel(shape):
            raise self.shape_error(ShapeError, node, shapes, f"stored shape {list(stored)} has {numel(stored)} elements, "
                                   f"shape {list(shape)} {numel(shape)}", fix="both must hold the same elements")

    def params(self, node, shapes):
        return numel(node.attrs["shape"])

    def emit(self, ctx, node, args, shapes):
        shape = tuple(node.attrs["shape"])
        p = ctx.parameter(node, tuple(node.attrs["stored"] or shape))
        return ctx.call_function(expand_parameter, [p, self.batch_size(ctx, node, args[0]), shape])


def expand_parameter(p, batch: int, shape: tuple[int, ...]):
    """``p`` viewed as ``(batch, *shape)`` (no copy)."""
    return p.reshape(1, *shape).expand(batch, *shape)
