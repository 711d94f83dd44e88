"""Import rules for functions and Tensor methods (``FUNCTION_RULES``,
``METHOD_RULES``): element-wise math, views and indexing, reductions,
attention, and the functional forms of layers (``F.conv2d(x, self.weight)``).

Dims in the traced calls are torch dims of the batched tensor; rules check
them with :meth:`Site.dim` (the batch dim is never an op's to touch) and pass
them on as the archlab ops take them (torch dims, batch = 0). Sizes are read
from the traced values, so ``x.view(x.size(0), -1)`` and a reshape computed
from ``x.shape`` both import as the shapes they produced on the example input.
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx

from archlab.errors import fmt_shape
from archlab.torchio.import_rules import (
    ALIAS, AVG_POOL, MAX_POOL, TUPLE, Mapped, Rule, Site, Unmapped, adaptive_avg_pool, avg_pool,
    batch_norm_attrs, batch_norm_op, conv2d_attrs, conv_function, max_pool, owner_of,
)
from archlab.torchio.import_math import FUNCTION_RULES as MATH_FUNCTIONS, METHOD_RULES as MATH_METHODS
from archlab.torchio.import_windows import WINDOW_FUNCTION_RULES, WINDOW_METHOD_RULES


def _input(s: Site) -> fx.Node:
    return s.tensor(s.node.args[0] if s.node.args else s.node.kwargs.get("input", s.node.kwargs.get("self")))


# -- element-wise ------------------------------------------------------------------
def _activation(op: str, *names: str, **defaults: Any) -> Rule:
    """``F.relu(x, inplace)``, ``x.relu_()``, ``F.gelu(x, approximate=...)``: inplace is irrelevant in the IR."""
    def rule(s: Site) -> Mapped:
        a = s.bind("input", *names, "inplace", inplace=False, **defaults)
        return Mapped(op, (s.tensor(a["input"]),), {k: a[k] for k in names})

    return rule


_REVERSED = {"add": "add", "mul": "mul", "sub": "rsub", "div": "rdiv", "pow": None}


def _binary(op: str, *, commutes: bool = True) -> Rule:
    """``a + b`` on tensors, or with a Python number (the ``scalar`` op)."""
    def rule(s: Site) -> Mapped:
        names = ("input", "other", "alpha") if op in ("add", "sub") else ("input", "other")
        a = s.bind(*names, "rounding_mode", alpha=1, rounding_mode=None)
        if a["alpha"] != 1 or a["rounding_mode"] is not None:
            raise Unmapped(f"alpha={a['alpha']!r}, rounding_mode={a['rounding_mode']!r}; archlab's {op} has neither")
        x, y = a["input"], a["other"]
        xt, yt = s.shape(x) is not None, s.shape(y) is not None
        if xt and yt:
            if op == "pow":
                raise Unmapped("a tensor raised to a tensor power; archlab's pow takes a constant exponent")
            return Mapped(op, (x, y))
        number = y if xt else x
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise Unmapped(f"operand {number!r} is neither a tensor computed from the input nor a number")
        fn = op if xt else _REVERSED[op]
        if fn is None:
            raise Unmapped("a number raised to a tensor power; archlab has no op for it")
        return Mapped("scalar", (x if xt else y,), {"fn": fn, "value": float(number)})

    return rule


def _rsub(s: Site) -> Mapped:
    a = s.bind("input", "other", "alpha", alpha=1)
    if a["alpha"] != 1 or not isinstance(a["other"], (int, float)):
        raise Unmapped("torch.rsub with a tensor or alpha; archlab maps number - tensor")
    return Mapped("scalar", (s.tensor(a["input"]),), {"fn": "rsub", "value": float(a["other"])})


# -- layers in functional form --------------------------------------------------------
def _linear(s: Site) -> Mapped:
    a = s.bind("input", "weight", "bias", bias=None)
    owner = owner_of(s, weight=a["weight"], bias=a["bias"])
    return Mapped("linear", (s.tensor(a["input"]),), {"out_features": s.shape(a["weight"])[0],
                                                      "bias": a["bias"] is not None}, owner=owner)


def _batch_norm(s: Site) -> Mapped:
    a = s.bind("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps",
               weight=None, bias=None, training=False, momentum=0.1, eps=1e-5)
    if a["training"]:
        raise Unmapped("batch norm in training mode (batch statistics); import the model in eval mode")
    owner = owner_of(s, running_mean=a["running_mean"], running_var=a["running_var"], weight=a["weight"],
                   bias=a["bias"])
    if (a["weight"] is None) != (a["bias"] is None) or a["running_mean"] is None:
        raise Unmapped("batch norm with only one of weight and bias, or without running statistics")
    module = s.module_at(owner)
    attrs = batch_norm_attrs(module, a["eps"], a["momentum"], a["weight"] is not None, True)
    x = s.tensor(a["input"])
    return Mapped(batch_norm_op(s, x), (x,), attrs, owner=owner)


def _layer_norm(s: Site) -> Mapped:
    a = s.bind("input", "normalized_shape", "weight", "bias", "eps", weight=None, bias=None, eps=1e-5)
    if a["weight"] is None and a["bias"] is not None:
        raise Unmapped("layer norm with a bias but no weight")
    attrs = dict(normalized_dims=len(a["normalized_shape"]), eps=a["eps"], elementwise_affine=a["weight"] is not None,
                 bias=a["bias"] is not None)
    if a["weight"] is None:
        return Mapped("layer_norm", (s.tensor(a["input"]),), attrs)
    return Mapped("layer_norm", (s.tensor(a["input"]),), attrs, owner=owner_of(s, weight=a["weight"], bias=a["bias"]))


def _group_norm(s: Site) -> Mapped:
    a = s.bind("input", "num_groups", "weight", "bias", "eps", weight=None, bias=None, eps=1e-5)
    if (a["weight"] is None) != (a["bias"] is None):
        raise Unmapped("group norm with only one of weight and bias")
    attrs = dict(num_groups=a["num_groups"], eps=a["eps"], affine=a["weight"] is not None)
    owner = owner_of(s, weight=a["weight"], bias=a["bias"]) if a["weight"] is not None else None
    return Mapped("group_norm", (s.tensor(a["input"]),), attrs, owner=owner)


# -- views, indexing, joins -------------------------------------------------------------
def _reshape_to(x: fx.Node, s: Site) -> Mapped:
    """A view/reshape/flatten/squeeze to the traced output shape; ``flatten`` when it keeps only the batch."""
    before, after = s.shape(x), s.out_shape
    if after is None or not after or after[0] != before[0]:
        raise Unmapped(f"reshapes {fmt_shape(before)} to {fmt_shape(after)}, changing the batch dim")
    if after == before:
        return Mapped(ALIAS, (x,))
    if len(after) == 2 and len(before) >= 2:
        return Mapped("flatten", (x,))
    return Mapped("reshape", (x,), {"shape": tuple(after[1:])})


def _view(s: Site) -> Mapped:
    return _reshape_to(_input(s), s)


def _squeeze(s: Site) -> Mapped:
    """``x.squeeze(d)`` / ``x.unsqueeze(d)``: never at the batch dim, and
    ``squeeze()`` without a dim would drop the batch when it is 1."""
    x = _input(s)
    name = s.node.target if s.node.op == "call_method" else getattr(s.node.target, "__name__", "")
    d = s.node.args[1] if len(s.node.args) > 1 else s.node.kwargs.get("dim")
    if d is None:
        raise Unmapped(f"{name}() without a dim also squeezes the batch dim when it is 1; give the dims")
    rank = len(s.shape(x)) + (name == "unsqueeze")
    dims = d if isinstance(d, (tuple, list)) else (d,)
    if any(not isinstance(k, int) or k % rank == 0 for k in dims):
        raise Unmapped(f"{name} at dim {d!r}, the batch dim; archlab keeps the batch dim first and whole")
    return _reshape_to(x, s)


def _permute(s: Site) -> Mapped:
    x = _input(s)
    dims = s.node.args[1:] if s.node.op == "call_method" else (s.node.args[1:2] or (s.node.kwargs.get("dims"),))
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    rank = len(s.shape(x))
    if sorted(d % rank if isinstance(d, int) else -1 for d in dims) != list(range(rank)):
        raise Unmapped(f"permutes with dims {dims!r}; archlab needs a constant permutation")
    dims = tuple(d % rank for d in dims)  # one that moves the batch waits for its consumer (the importer)
    return Mapped(ALIAS, (x,)) if dims == tuple(range(rank)) else Mapped("permute", (x,), {"dims": dims})


def _transpose(s: Site) -> Mapped:
    a = s.bind("input", "dim0", "dim1")
    x = s.tensor(a["input"])
    d0, d1 = s.dim(a["dim0"], x), s.dim(a["dim1"], x)
    dims = list(range(len(s.shape(x))))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return Mapped(ALIAS, (x,)) if d0 == d1 else Mapped("permute", (x,), {"dims": tuple(dims)})


def _index_steps(s: Site, x: fx.Node, index: Any) -> list[tuple[str, dict]]:
    """``x[index]`` as slice/select/reshape steps (basic indexing only)."""
    shape = list(s.shape(x))
    idx = list(index) if isinstance(index, tuple) else [index]
    if any(i is Ellipsis for i in idx):
        k = idx.index(Ellipsis)
        fill = len(shape) - (len(idx) - 1 - sum(i is None for i in idx))
        idx = idx[:k] + [slice(None)] * fill + idx[k + 1:]
    steps: list[tuple[str, dict]] = []
    dim = 0
    for i in idx:
        if isinstance(i, fx.Node) or not (i is None or isinstance(i, (int, slice))):
            raise Unmapped(f"indexes with {i!r}; archlab maps basic indexing with constants (ints, slices, None)")
        if i is None:
            if dim == 0:
                raise Unmapped("indexes with None before the batch dim, which moves it; archlab keeps it first")
            continue
        if dim == 0 and i != slice(None):
            raise Unmapped(f"indexes the batch dim with {i!r}; archlab keeps the batch whole")
        if isinstance(i, int):
            steps.append(("select", {"dim": dim, "index": i}))
            shape.pop(dim)
            continue
        start, stop, step = i.indices(shape[dim])
        if (start, stop, step) != (0, shape[dim], 1):
            if any(isinstance(v, fx.Node) for v in (i.start, i.stop, i.step)) or step <= 0:
                raise Unmapped(f"slices with {i!r}; archlab needs constant, positive steps")
            steps.append(("slice", {"dim": dim, "start": start, "stop": max(start, stop), "step": step}))
            shape[dim] = len(range(start, stop, step))
        dim += 1
    if any(i is None for i in idx) or any(isinstance(i, int) for i in idx):
        final = tuple(s.out_shape[1:])
        if tuple(shape[1:]) != final:  # a None (unsqueeze) changes the rank: one reshape at the end
            steps.append(("reshape", {"shape": final}))
    return steps


def _getitem(s: Site) -> Mapped:
    x, index = s.node.args
    if not isinstance(x, fx.Node):
        raise Unmapped(f"indexes {x!r}, not a traced value")
    if s.shape(x) is None:  # a tuple of tensors (split, attention outputs): the element
        if not isinstance(index, int):
            raise Unmapped(f"indexes a tuple with {index!r}; archlab needs a constant int")
        return Mapped(ALIAS, (x,), {"element": index})
    steps = _index_steps(s, x, index)
    if not steps:
        return Mapped(ALIAS, (x,))
    (op, attrs), *then = steps
    return Mapped(op, (x,), attrs, then=tuple(then))


def _parts(s: Site, x: fx.Node, dim: int, sizes: list[int], keep: bool) -> Mapped:
    """A tuple of slices (``keep``) or selects along ``dim``."""
    parts, start = [], 0
    for n in sizes:
        attrs = {"dim": dim, "start": start, "stop": start + n, "step": 1} if keep else {"dim": dim, "index": start}
        parts.append(Mapped("slice" if keep else "select", (x,), attrs))
        start += n
    return Mapped(TUPLE, parts=tuple(parts))


def _split(s: Site) -> Mapped:
    """``torch.split``/``chunk``/``tensor_split``: the traced parts give each slice's size."""
    x = _input(s)
    names = {"split": ("input", "split_size_or_sections", "dim"), "chunk": ("input", "chunks", "dim")}
    name = getattr(s.node.target, "__name__", s.node.target)
    a = s.bind(*names["chunk" if name == "chunk" else "split"], dim=0)
    d = s.dim(a["dim"], x)
    parts = s.value(s.node)
    return _parts(s, x, d, [p.shape[d] for p in parts], keep=True)


def _unbind(s: Site) -> Mapped:
    a = s.bind("input", "dim", dim=0)
    x = s.tensor(a["input"])
    d = s.dim(a["dim"], x)
    return _parts(s, x, d, [1] * s.shape(x)[d], keep=False)


def _cat(s: Site, op: str = "concat") -> Mapped:
    a = s.bind("tensors", "dim", dim=0)
    if not isinstance(a["tensors"], (list, tuple)) or not a["tensors"]:
        raise Unmapped(f"joins {a['tensors']!r}; archlab needs a literal list of tensors")
    parts = tuple(s.tensor(t) for t in a["tensors"])
    rank = len(s.shape(parts[0])) + (op == "stack")
    d = a["dim"]
    if not isinstance(d, int) or not -rank <= d < rank or d % rank == 0:
        raise Unmapped(f"joins along dim {d!r}; archlab joins along a dim other than the batch")
    return Mapped(op, parts, {"dim": d % rank})


def _flatten(s: Site) -> Mapped:
    a = s.bind("input", "start_dim", "end_dim", start_dim=0, end_dim=-1)
    return _reshape_to(s.tensor(a["input"]), s)


# -- reductions, attention ---------------------------------------------------------------
def _reduce(fn: str) -> Rule:
    def rule(s: Site) -> Mapped:
        a = s.bind("input", "dim", "keepdim", "dtype", dim=None, keepdim=False, dtype=None)
        x = s.tensor(a["input"])
        if a["dtype"] is not None or a["dim"] is None:
            raise Unmapped(f"{fn} with dtype or over every dim (the batch too); archlab reduces given non-batch dims")
        dims = (a["dim"],) if isinstance(a["dim"], int) else tuple(a["dim"])
        return Mapped("reduce", (x,), {"fn": fn, "dims": tuple(sorted({s.dim(d, x) for d in dims})),
                                       "keepdim": bool(a["keepdim"])})

    return rule


def _softmax(s: Site) -> Mapped:
    a = s.bind("input", "dim", "_stacklevel", "dtype", _stacklevel=3, dtype=None)
    if a["dtype"] is not None:
        raise Unmapped("softmax with a dtype; archlab's softmax keeps the input's")
    x = s.tensor(a["input"])
    return Mapped("softmax", (x,), {"dim": s.dim(a["dim"], x)})


def _sdpa(s: Site) -> Mapped:
    a = s.bind("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa",
               attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False)
    mask = a["attn_mask"]
    if a["dropout_p"] or a["enable_gqa"] or (mask is not None and (s.shape(mask) is None or s.value(mask).dtype
                                                                     == torch.bool)):
        raise Unmapped("scaled_dot_product_attention with dropout, grouped queries or a boolean mask; archlab's sdpa "
                       "takes an additive float mask")
    inputs = tuple(s.tensor(a[k]) for k in ("query", "key", "value")) + (() if mask is None else (mask,))
    return Mapped("sdpa", inputs, {"is_causal": a["is_causal"], "scale": a["scale"]})


def _matmul(s: Site) -> Mapped:
    a = s.bind("input", "other")
    return Mapped("matmul", (s.tensor(a["input"]), s.tensor(a["other"])))


# -- resampling, padding, pooling -----------------------------------------------------------
def _interpolate(s: Site) -> Mapped:
    a = s.bind("input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias",
               size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None,
               antialias=False)
    x = s.tensor(a["input"])
    if a["mode"] not in ("nearest", "bilinear") or a["antialias"] or len(s.shape(x)) != 4:
        raise Unmapped(f"interpolate mode={a['mode']!r} on a {fmt_shape(s.shape(x))} tensor; archlab's upsample is "
                       "nearest or bilinear on NxCxHxW")
    attrs = {"mode": a["mode"], "align_corners": bool(a["align_corners"])}
    scale = a["scale_factor"]
    if scale is None or a["recompute_scale_factor"]:  # torch samples by the output size
        return Mapped("upsample", (x,), {**attrs, "size": tuple(s.out_shape[2:])})
    scales = set(scale) if isinstance(scale, (tuple, list)) else {scale}
    if len(scales) != 1 or not float(next(iter(scales))).is_integer():
        raise Unmapped(f"scale_factor={scale!r}; torch samples by the scale itself, archlab's upsample by an integer "
                       "scale or a size (pass recompute_scale_factor=True, or a size)")
    return Mapped("upsample", (x,), {**attrs, "scale_factor": int(next(iter(scales)))})


def _pad(s: Site) -> Mapped:
    a = s.bind("input", "pad", "mode", "value", mode="constant", value=None)
    if a["mode"] != "constant" or any(not isinstance(p, int) for p in a["pad"]):
        raise Unmapped(f"pads with mode={a['mode']!r}; archlab's pad is constant, by constant amounts")
    return Mapped("pad", (s.tensor(a["input"]),), {"pads": tuple(a["pad"]), "value": float(a["value"] or 0.0)})


def _pool_function(build: Callable, params: dict[str, Any]) -> Rule:
    def rule(s: Site) -> Mapped:
        a = s.bind("input", *params, **{k: v for k, v in params.items() if k != "kernel_size"})
        return build(s.tensor(a.pop("input")), a)

    return rule


def _adaptive_avg_pool_function(s: Site) -> Mapped:
    a = s.bind("input", "output_size")
    return adaptive_avg_pool(s.tensor(a["input"]), a["output_size"], s)


def _dropout(s: Site) -> Mapped:
    a = s.bind("input", "p", "training", "inplace", p=0.5, training=True, inplace=False)
    x = s.tensor(a["input"])
    return Mapped("dropout", (x,), {"p": a["p"]}) if a["training"] else Mapped(ALIAS, (x,))


def _stochastic_depth(s: Site) -> Mapped:
    a = s.bind("input", "p", "mode", "training", training=True)
    if a["training"] and a["p"] > 0:
        raise Unmapped("stochastic depth in training mode; archlab has no op for it: import the model in eval mode "
                       "(model.eval()), where it is the identity")
    return Mapped(ALIAS, (s.tensor(a["input"]),))


def _same(s: Site) -> Mapped:
    """``contiguous``, ``clone``, ``detach``, ``float()``: the value itself in a functional IR (dtype unchanged)."""
    x = _input(s)
    got, was = s.value(s.node), s.value(x)
    if isinstance(got, torch.Tensor) and isinstance(was, torch.Tensor) and got.dtype != was.dtype:
        raise Unmapped(f"converts {was.dtype} to {got.dtype}; archlab graphs keep one dtype")
    return Mapped(ALIAS, (x,))


def _each(names, rule: Rule) -> dict:
    return {n: rule for n in names}


FUNCTION_RULES: dict[Callable, Rule] = {
    **_each((F.relu, F.relu_, torch.relu, torch.relu_), _activation("relu")),
    F.relu6: _activation("relu6"),
    **_each((torch.sigmoid, torch.sigmoid_, F.sigmoid), _activation("sigmoid")),
    F.hardswish: _activation("hardswish"),
    F.hardsigmoid: _activation("hardsigmoid"),
    F.silu: _activation("silu"),
    F.gelu: _activation("gelu", "approximate", approximate="none"),
    **_each((F.leaky_relu, F.leaky_relu_), _activation("leaky_relu", "negative_slope", negative_slope=0.01)),
    F.mish: _activation("mish"),
    **_each((torch.tanh, F.tanh), _activation("tanh")),
    F.elu: _activation("elu", "alpha", alpha=1.0),
    F.softplus: _activation("softplus", "beta", "threshold", beta=1.0, threshold=20.0),
    F.hardtanh: _activation("hardtanh", "min_val", "max_val", min_val=-1.0, max_val=1.0),
    **_each((operator.add, operator.iadd, torch.add), _binary("add")),
    **_each((operator.sub, operator.isub, torch.sub), _binary("sub")),
    **_each((operator.mul, operator.imul, torch.mul), _binary("mul")),
    **_each((operator.truediv, operator.itruediv, torch.div), _binary("div")),
    **_each((operator.pow, torch.pow), _binary("pow")),
    torch.rsub: _rsub,
    **_each((operator.matmul, torch.matmul, torch.bmm), _matmul),
    **_each((torch.cat, torch.concat, torch.concatenate), _cat),
    torch.stack: lambda s: _cat(s, "stack"),
    torch.flatten: _flatten,
    torch.reshape: _view,
    **_each((torch.squeeze, torch.unsqueeze), _squeeze),
    torch.permute: _permute,
    **_each((torch.transpose, torch.swapaxes), _transpose),
    operator.getitem: _getitem,
    **_each((torch.split, torch.chunk, torch.tensor_split), _split),
    torch.unbind: _unbind,
    torch.mean: _reduce("mean"),
    torch.sum: _reduce("sum"),
    torch.amax: _reduce("amax"),
    **_each((F.softmax, torch.softmax), _softmax),
    F.scaled_dot_product_attention: _sdpa,
    F.interpolate: _interpolate,
    F.pad: _pad,
    F.conv2d: conv_function("conv2d", conv2d_attrs),
    F.linear: _linear,
    F.batch_norm: _batch_norm,
    F.layer_norm: _layer_norm,
    F.group_norm: _group_norm,
    F.adaptive_avg_pool2d: _adaptive_avg_pool_function,
    F.max_pool2d: _pool_function(max_pool, MAX_POOL),
    F.avg_pool2d: _pool_function(avg_pool, AVG_POOL),
    F.dropout: _dropout,
    **MATH_FUNCTIONS,
    **WINDOW_FUNCTION_RULES,
}

# Functions of optional libraries, by qualified name (no import needed to match them).
NAMED_FUNCTION_RULES: dict[str, Rule] = {
    "torchvision.ops.stochastic_depth.stochastic_depth": _stochastic_depth,
}

METHOD_RULES: dict[str, Rule] = {
    **_each(("relu", "relu_"), _activation("relu")),
    **_each(("sigmoid", "sigmoid_"), _activation("sigmoid")),
    **_each(("tanh", "tanh_"), _activation("tanh")),
    **_each(("add", "add_"), _binary("add")),
    **_each(("sub", "sub_"), _binary("sub")),
    **_each(("mul", "mul_"), _binary("mul")),
    **_each(("div", "div_"), _binary("div")),
    **_each(("pow",), _binary("pow")),
    **_each(("matmul", "bmm"), _matmul),
    "flatten": _flatten,
    **_each(("view", "reshape", "view_as", "reshape_as"), _view),
    **_each(("squeeze", "unsqueeze"), _squeeze),
    "permute": _permute,
    **_each(("transpose", "swapaxes"), _transpose),
    **_each(("split", "chunk", "tensor_split"), _split),
    "unbind": _unbind,
    "mean": _reduce("mean"),
    "sum": _reduce("sum"),
    "amax": _reduce("amax"),
    "softmax": _softmax,
    **_each(("contiguous", "clone", "detach", "float", "type_as", "to"), _same),
    **MATH_METHODS,
    **WINDOW_METHOD_RULES,
}
