"""Import rules for vector math and 1-D convolution: ``torch.addcmul``,
``F.normalize``, Euclidean norms (``x.norm(p=2, dim)``,
``torch.linalg.vector_norm``), ``F.conv1d`` / ``nn.Conv1d``, ``expand_as``
feeding a broadcasting op and ``repeat`` of one sample over the batch. The function and method rules are merged into
:mod:`archlab.torchio.import_functions`' tables; ``nn.Conv1d`` joins
:data:`archlab.torchio.import_rules.MODULE_RULES` when this module is imported
(by :mod:`~archlab.torchio.import_functions`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from archlab.errors import fmt_shape
from archlab.torchio.import_rules import (
    ALIAS, MODULE_RULES, Mapped, Rule, Site, Unmapped, conv_function, conv_module, resolve_padding,
)
from archlab.torchio.trace import depends


def _addcmul(s: Site) -> Mapped:
    a = s.bind("input", "tensor1", "tensor2", "value", value=1)
    if isinstance(a["value"], bool) or not isinstance(a["value"], (int, float)):
        raise Unmapped(f"value={a['value']!r} is not a number")
    return Mapped("addcmul", tuple(s.tensor(a[k]) for k in ("input", "tensor1", "tensor2")),
                  {"value": float(a["value"])})


def _euclidean(p: Any) -> bool:
    return p in (2, "fro") and not isinstance(p, bool)


def _normalize(s: Site) -> Mapped:
    a = s.bind("input", "p", "dim", "eps", "out", p=2.0, dim=1, eps=1e-12, out=None)
    x = s.tensor(a["input"])
    if not _euclidean(a["p"]) or a["out"] is not None:
        raise Unmapped(f"normalize with p={a['p']!r}; archlab's normalize divides by the Euclidean norm (p=2)")
    return Mapped("normalize", (x,), {"dim": s.dim(a["dim"], x), "eps": float(a["eps"])})


def _norm_dims(s: Site, x: fx.Node, dim: Any) -> tuple[int, ...]:
    if dim is None:
        raise Unmapped("a norm over every dim (the batch too); archlab reduces given non-batch dims")
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(sorted({s.dim(d, x) for d in dims}))


def _norm(s: Site) -> Mapped:
    """``x.norm(p=2, dim)`` and ``torch.norm``: the Euclidean norm over ``dim``."""
    a = s.bind("input", "p", "dim", "keepdim", "out", "dtype", p="fro", dim=None, keepdim=False, out=None, dtype=None)
    x = s.tensor(a["input"])
    if not _euclidean(a["p"]) or a["dtype"] is not None or a["out"] is not None:
        raise Unmapped(f"norm with p={a['p']!r} or a dtype; archlab's reduce takes the Euclidean norm (p=2)")
    return Mapped("reduce", (x,), {"fn": "norm", "dims": _norm_dims(s, x, a["dim"]), "keepdim": bool(a["keepdim"])})


def _vector_norm(s: Site) -> Mapped:
    a = s.bind("x", "ord", "dim", "keepdim", "dtype", "out", ord=2, dim=None, keepdim=False, dtype=None, out=None)
    x = s.tensor(a["x"])
    if a["ord"] != 2 or a["dtype"] is not None or a["out"] is not None:
        raise Unmapped(f"vector_norm with ord={a['ord']!r} or a dtype; archlab's reduce takes the Euclidean norm")
    return Mapped("reduce", (x,), {"fn": "norm", "dims": _norm_dims(s, x, a["dim"]), "keepdim": bool(a["keepdim"])})


def _one(v: Any, what: str) -> int:
    v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
    if len(v) != 1 or not isinstance(v[0], int):
        raise Unmapped(f"{what}={v!r} is not one integer")
    return v[0]


def conv1d_attrs(weight_shape: tuple[int, ...], bias: bool, stride, padding, dilation, groups) -> dict[str, Any]:
    """conv1d's attributes from a weight's shape and torch's arguments (``padding`` may be 'same'/'valid')."""
    k, d = weight_shape[2], _one(dilation, "dilation")
    padding = resolve_padding(padding, k, d)
    return dict(out_channels=weight_shape[0], kernel_size=k, stride=_one(stride, "stride"),
                padding=_one(padding, "padding"), dilation=d, groups=groups, bias=bias)


# Element-wise ops that broadcast their operands: an expand feeding only these changes nothing.
_BROADCASTING = frozenset(("add", "sub", "mul", "truediv", "div", "iadd", "isub", "imul", "itruediv", "addcmul",
                           "add_", "sub_", "mul_", "div_", "rsub"))


def _feeds_broadcasting_ops_only(n: fx.Node) -> bool:
    def name(u: fx.Node) -> str:
        return u.target if u.op == "call_method" else getattr(u.target, "__name__", "")

    return bool(n.users) and all(u.op in ("call_function", "call_method") and name(u) in _BROADCASTING
                                 for u in n.users)


def expand(s: Site) -> Mapped:
    """``t.expand(...)`` / ``t.expand_as(x)``: the value itself when only the batch
    changes (a class token's ``expand(n, -1, -1)``), or when every consumer is an
    element-wise op that broadcasts anyway (ECA's ``x * y.expand_as(x)``)."""
    x = s.tensor(s.node.args[0]) if s.node.op == "call_method" else s.tensor(s.bind("input", "size")["input"])
    before, after = s.shape(x), s.out_shape
    if x.op == "get_attr" or (len(before) == len(after) and before[1:] == after[1:]):
        return Mapped(ALIAS, (x,))
    if len(before) == len(after) and _feeds_broadcasting_ops_only(s.node):
        return Mapped(ALIAS, (x,))
    raise Unmapped(f"expands {fmt_shape(before)} to {fmt_shape(after)} for a consumer that does not broadcast; "
                   "archlab broadcasts in its element-wise ops")


def _repeat(s: Site) -> Mapped:
    """``t.repeat(B, 1, 1, 1)`` of a tensor with one sample: copies over the batch
    only, which archlab's batched values already are (XCiT's position encoding)."""
    x = s.tensor(s.node.args[0])
    sizes = s.node.args[1:]
    sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else tuple(sizes)
    before = s.shape(x)
    # computed from the input, dim 0 is the batch: a repeat there makes batch x batch samples
    if "input" not in depends(x) and len(sizes) == len(before) and all(k == 1 for k in sizes[1:]) and before[0] == 1:
        return Mapped(ALIAS, (x,))
    raise Unmapped(f"repeats {fmt_shape(before)} {sizes} times; archlab repeats one sample computed without the "
                   "input over the batch only")


FUNCTION_RULES: dict[Any, Rule] = {
    torch.addcmul: _addcmul,
    F.normalize: _normalize,
    torch.norm: _norm,
    torch.linalg.vector_norm: _vector_norm,
    **dict.fromkeys((F.conv1d, torch.conv1d), conv_function("conv1d", conv1d_attrs)),
}

METHOD_RULES: dict[str, Rule] = {
    "addcmul": _addcmul,
    "norm": _norm,
    "expand": expand,
    "expand_as": expand,
    "repeat": _repeat,
}

MODULE_RULES[nn.Conv1d] = conv_module("conv1d", conv1d_attrs)  # leaf modules live in import_rules' one table
