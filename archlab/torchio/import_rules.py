"""The rules :func:`archlab.torchio.importer.from_torch` maps fx nodes with.

Three tables, one per kind of fx node: ``MODULE_RULES`` (by the exact class of
a leaf module), ``FUNCTION_RULES`` (by the called function) and
``METHOD_RULES`` (by Tensor method name). A rule takes a :class:`Site` (the fx
node, its module and the traced shapes) and returns a :class:`Mapped` (the
archlab op, the fx nodes feeding it and its attributes), or raises
:class:`Unmapped` saying why the node cannot be expressed. Supporting another
layer or function is one entry here.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from archlab.errors import fmt_shape

ALIAS = "<alias>"  # the node's value is its first input (contiguous, dropout with training=False)
SCALAR = "<scalar>"  # marks a Python value such as a size; view/reshape rules read the traced shapes instead


class Unmapped(Exception):
    """Raised by a rule: the fx node cannot be expressed; the message says why."""


@dataclass
class Mapped:
    """What one fx node becomes.

    Fields:
        op: an archlab op name, or :data:`ALIAS` (the node passes its first input through).
        inputs: the fx nodes feeding it, in argument order.
        attrs: the op's attributes (canonicalised by the op definition).
        then: unary ops applied after ``op`` (a spatial mean without keepdim is
            ``adaptive_avg_pool2d`` then ``flatten``); the last one carries the
            fx node's name.
    """

    op: str
    inputs: tuple[fx.Node, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    then: tuple[tuple[str, dict[str, Any]], ...] = ()


class Site:
    """One fx node as a rule sees it: the node, its leaf module, traced shapes."""

    def __init__(self, node: fx.Node, module: nn.Module | None, results: dict[fx.Node, Any]):
        self.node = node
        self.module = module
        self._results = results

    def bind(self, *names: str, **defaults: Any) -> dict[str, Any]:
        """The call's arguments by parameter name (positional, then keywords), defaults filled.

        Raises:
            Unmapped: an argument is missing or is not among ``names``.
        """
        if len(self.node.args) > len(names):
            raise Unmapped(f"unexpected extra arguments {self.node.args[len(names):]!r}")
        bound = {**defaults, **dict(zip(names, self.node.args)), **self.node.kwargs}
        unknown = [k for k in self.node.kwargs if k not in names]
        missing = [k for k in names if k not in bound]
        if unknown or missing:
            raise Unmapped(f"unsupported argument(s) {', '.join(unknown)}" if unknown
                           else f"missing argument(s) {', '.join(missing)}")
        return bound

    def shape(self, value: Any) -> tuple[int, ...] | None:
        """The traced shape (batch included) of a tensor argument, else None."""
        s = self._results.get(value) if isinstance(value, fx.Node) else None
        return s if isinstance(s, tuple) else None

    @property
    def out_shape(self) -> tuple[int, ...] | None:
        return self.shape(self.node)

    def tensor(self, value: Any) -> fx.Node:
        """``value`` as a tensor input; constants cannot be expressed in archlab."""
        if self.shape(value) is None:
            raise Unmapped(f"operand {value!r} is not a tensor computed from the input (archlab ops take tensors only)")
        return value

    def module_input(self) -> fx.Node:
        if len(self.node.args) != 1 or self.node.kwargs:
            raise Unmapped("a leaf module called with more than one argument")
        return self.tensor(self.node.args[0])


Rule = Callable[[Site], Mapped]


def _qualname(fn: Any) -> str:
    try:
        name = fx.node._get_qualified_name(fn)
    except Exception:  # not every callable has a qualified name
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    return name.replace("_operator.", "operator.")


def short_target(node: fx.Node, module: nn.Module | None) -> str:
    """``Conv3d``, ``torch.tanh``, ``Tensor.view``: what a summary groups nodes by."""
    if node.op == "call_module":
        return type(module).__name__
    if node.op == "call_function":
        return _qualname(node.target)
    return f"Tensor.{node.target}" if node.op == "call_method" else node.op


def target_name(node: fx.Node, module: nn.Module | None) -> str:
    """``call_function torch.tanh``, ``call_module torch.nn.modules.conv.Conv3d 'c3'``, ..."""
    if node.op == "call_module":
        cls = type(module)
        return f"call_module {cls.__module__}.{cls.__qualname__} '{node.target}'"
    if node.op == "call_function":
        return f"call_function {_qualname(node.target)}"
    if node.op == "call_method":
        return f"call_method Tensor.{node.target}"
    return f"{node.op} {node.target}"


def _no_rule(node: fx.Node, module: nn.Module | None) -> Rule:
    if node.op == "get_attr":
        why = f"reads '{node.target}' directly; archlab layers own their weights, so use a supported layer instead"
    elif node.op == "call_module":
        why = f"archlab has no op for {type(module).__name__}"
    elif node.op == "call_method":
        why = f"archlab has no op for Tensor.{node.target}"
    elif node.target is operator.getitem:
        why = "archlab has no op for indexing or slicing (operator.getitem)"
    else:
        why = f"archlab has no op for {_qualname(node.target)}"

    def rule(site: Site) -> Mapped:
        raise Unmapped(why)

    return rule


def find_rule(node: fx.Node, module: nn.Module | None) -> Rule:
    """The rule for ``node``; one that raises :class:`Unmapped` if there is none."""
    if node.op == "call_module":
        rule = MODULE_RULES.get(type(module))
    elif node.op == "call_function":
        rule = FUNCTION_RULES.get(node.target) or NAMED_FUNCTION_RULES.get(_qualname(node.target))
    elif node.op == "call_method":
        rule = METHOD_RULES.get(node.target)
    else:
        rule = None
    return rule or _no_rule(node, module)


_SHAPE_FUNCTIONS = {getattr, operator.getitem, operator.add, operator.sub, operator.mul, operator.floordiv}


def is_shape_arithmetic(node: fx.Node, result_type: Any) -> bool:
    """``x.size(0)``, ``x.shape[1] * 2``: Python values that only size a view/reshape."""
    if result_type not in (int, torch.Size, tuple, list):
        return False
    if node.op == "call_method":
        return node.target in ("size", "dim")
    return node.op == "call_function" and node.target in _SHAPE_FUNCTIONS


# -- rules ---------------------------------------------------------------------
def _activation(op: str) -> Rule:
    """``F.relu(x, inplace)``, ``x.relu_()``, ``torch.sigmoid(x)``: inplace is irrelevant in the IR."""
    return lambda s: Mapped(op, (s.tensor(s.bind("input", "inplace", inplace=False)["input"]),))


def _activation_module(op: str) -> Rule:
    return lambda s: Mapped(op, (s.module_input(),))


def _binary(op: str) -> Rule:
    def rule(s: Site) -> Mapped:
        a = s.bind("input", "other", "alpha", alpha=1)
        if a["alpha"] != 1:
            raise Unmapped(f"alpha={a['alpha']!r}; archlab's {op} has no scale factor")
        return Mapped(op, (s.tensor(a["input"]), s.tensor(a["other"])))

    return rule


def _cat(s: Site) -> Mapped:
    a = s.bind("tensors", "dim", dim=0)
    if not isinstance(a["tensors"], (list, tuple)) or not a["tensors"]:
        raise Unmapped(f"concatenates {a['tensors']!r}; archlab needs a literal list of tensors")
    parts = tuple(s.tensor(t) for t in a["tensors"])
    rank = len(s.shape(parts[0]))
    if not isinstance(a["dim"], int) or a["dim"] % rank != 1:
        raise Unmapped(f"concatenates along dim {a['dim']}; archlab's concat joins channels (dim 1)")
    return Mapped("concat", parts)


def _flatten_dims(x: fx.Node, start: Any, end: Any, s: Site) -> Mapped:
    rank = len(s.shape(x))
    if not isinstance(start, int) or not isinstance(end, int) or start % rank != 1 or end % rank != rank - 1:
        raise Unmapped(f"flattens dims {start}..{end}; archlab's flatten keeps only the batch dim "
                       "(start_dim=1, end_dim=-1)")
    return Mapped("flatten", (x,))


def _flatten(s: Site) -> Mapped:
    a = s.bind("input", "start_dim", "end_dim", start_dim=0, end_dim=-1)
    return _flatten_dims(s.tensor(a["input"]), a["start_dim"], a["end_dim"], s)


def _view(s: Site) -> Mapped:
    """``x.view(x.size(0), -1)`` and friends, recognised from the traced shapes."""
    x = s.tensor(s.node.args[0] if s.node.args else s.node.kwargs.get("input"))
    before, after = s.shape(x), s.out_shape
    if after is not None and len(before) >= 2 and after == (before[0], math.prod(before[1:])):
        return Mapped("flatten", (x,))
    raise Unmapped(f"reshapes {fmt_shape(before)} to {fmt_shape(after)}; archlab can only flatten to (N, -1)")


def _mean(s: Site) -> Mapped:
    a = s.bind("input", "dim", "keepdim", "dtype", keepdim=False, dtype=None)
    x = s.tensor(a["input"])
    dims = (a["dim"],) if isinstance(a["dim"], int) else tuple(a["dim"] or ())
    rank = len(s.shape(x))
    if rank != 4 or a["dtype"] is not None or not all(isinstance(d, int) for d in dims) \
            or sorted(d % rank for d in dims) != [2, 3]:
        raise Unmapped(f"mean over dims {dims} of a {fmt_shape(s.shape(x))} tensor; archlab maps only the spatial "
                       "mean (dims 2, 3)")
    return Mapped("adaptive_avg_pool2d", (x,), {"output_size": 1}, then=() if a["keepdim"] else (("flatten", {}),))


def _adaptive_avg_pool(x: fx.Node, size: Any, s: Site) -> Mapped:
    shape = s.shape(x)
    if len(shape) != 4:
        raise Unmapped(f"pools a {fmt_shape(shape)} tensor; archlab pools NxCxHxW")
    if isinstance(size, fx.Node) or (isinstance(size, (tuple, list)) and any(isinstance(v, fx.Node) for v in size)):
        raise Unmapped(f"output_size {size!r} is computed at run time; archlab needs a constant")
    size = (size, size) if isinstance(size, int) else tuple(size)
    size = tuple(shape[2 + i] if v is None else v for i, v in enumerate(size))  # None keeps that input size
    return Mapped("adaptive_avg_pool2d", (x,), {"output_size": size})


def _adaptive_avg_pool_function(s: Site) -> Mapped:
    a = s.bind("input", "output_size")
    return _adaptive_avg_pool(s.tensor(a["input"]), a["output_size"], s)


# Pooling parameters (as torch names them, in F.*_pool2d's order) and their defaults; kernel_size is required.
_MAX_POOL = {"kernel_size": None, "stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
             "return_indices": False}
_AVG_POOL = {"kernel_size": None, "stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True,
             "divisor_override": None}


def _max_pool(x: fx.Node, a: dict[str, Any]) -> Mapped:
    if a.pop("return_indices"):
        raise Unmapped("return_indices=True; archlab's max_pool2d returns values only")
    return Mapped("max_pool2d", (x,), {**a, "stride": a["stride"] or None})  # stride None or [] = kernel size


def _avg_pool(x: fx.Node, a: dict[str, Any]) -> Mapped:
    if a.pop("divisor_override") is not None:
        raise Unmapped("divisor_override is set; archlab's avg_pool2d divides by the window size")
    return Mapped("avg_pool2d", (x,), {**a, "stride": a["stride"] or None})


def _pool_function(build: Callable, params: dict[str, Any]) -> Rule:
    def rule(s: Site) -> Mapped:
        a = s.bind("input", *params, **{k: v for k, v in params.items() if k != "kernel_size"})
        return build(s.tensor(a.pop("input")), a)

    return rule


def _pool_module(build: Callable, params: dict[str, Any]) -> Rule:
    return lambda s: build(s.module_input(), {k: getattr(s.module, k) for k in params})


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


def _conv2d(s: Site) -> Mapped:
    m: nn.Conv2d = s.module
    if m.padding_mode != "zeros":
        raise Unmapped(f"padding_mode={m.padding_mode!r}; archlab's conv2d pads with zeros")
    padding = m.padding
    if padding == "valid":
        padding = 0
    elif padding == "same":
        total = [d * (k - 1) for k, d in zip(m.kernel_size, m.dilation)]
        if any(t % 2 for t in total):
            raise Unmapped(f"padding='same' with kernel {m.kernel_size} pads unevenly; archlab pads both sides equally")
        padding = tuple(t // 2 for t in total)
    return Mapped("conv2d", (s.module_input(),), dict(
        out_channels=m.out_channels, kernel_size=m.kernel_size, stride=m.stride, padding=padding,
        dilation=m.dilation, groups=m.groups, bias=m.bias is not None))


def _linear(s: Site) -> Mapped:
    m: nn.Linear = s.module
    return Mapped("linear", (s.module_input(),), {"out_features": m.out_features, "bias": m.bias is not None})


def _batch_norm(s: Site) -> Mapped:
    m: nn.BatchNorm2d = s.module
    if m.momentum is None:
        raise Unmapped("momentum=None (cumulative average); archlab's batch_norm2d uses an exponential average")
    return Mapped("batch_norm2d", (s.module_input(),), dict(
        eps=m.eps, momentum=m.momentum, affine=m.affine, track_running_stats=m.track_running_stats))


def _hardtanh(s: Site) -> Mapped:
    if (s.module.min_val, s.module.max_val) != (0.0, 6.0):
        raise Unmapped(f"Hardtanh({s.module.min_val}, {s.module.max_val}); archlab only has relu6 = Hardtanh(0, 6)")
    return Mapped("relu6", (s.module_input(),))


MODULE_RULES: dict[type, Rule] = {
    nn.Conv2d: _conv2d,
    nn.Linear: _linear,
    nn.BatchNorm2d: _batch_norm,
    nn.ReLU: _activation_module("relu"),
    nn.ReLU6: _activation_module("relu6"),
    nn.Hardtanh: _hardtanh,
    nn.Sigmoid: _activation_module("sigmoid"),
    nn.Hardswish: _activation_module("hardswish"),
    nn.Hardsigmoid: _activation_module("hardsigmoid"),
    nn.SiLU: _activation_module("silu"),
    nn.Identity: _activation_module("identity"),
    nn.MaxPool2d: _pool_module(_max_pool, _MAX_POOL),
    nn.AvgPool2d: _pool_module(_avg_pool, _AVG_POOL),
    nn.AdaptiveAvgPool2d: lambda s: _adaptive_avg_pool(s.module_input(), s.module.output_size, s),
    nn.Dropout: lambda s: Mapped("dropout", (s.module_input(),), {"p": s.module.p}),
    nn.Flatten: lambda s: _flatten_dims(s.module_input(), s.module.start_dim, s.module.end_dim, s),
}

FUNCTION_RULES: dict[Callable, Rule] = {
    **{fn: _activation("relu") for fn in (F.relu, F.relu_, torch.relu, torch.relu_)},
    F.relu6: _activation("relu6"),
    **{fn: _activation("sigmoid") for fn in (torch.sigmoid, torch.sigmoid_, F.sigmoid)},
    F.hardswish: _activation("hardswish"),
    F.hardsigmoid: _activation("hardsigmoid"),
    F.silu: _activation("silu"),
    **{fn: _binary("add") for fn in (operator.add, operator.iadd, torch.add)},
    **{fn: _binary("mul") for fn in (operator.mul, operator.imul, torch.mul)},
    **{fn: _cat for fn in (torch.cat, torch.concat, torch.concatenate)},
    torch.flatten: _flatten,
    torch.reshape: _view,
    torch.mean: _mean,
    F.adaptive_avg_pool2d: _adaptive_avg_pool_function,
    F.max_pool2d: _pool_function(_max_pool, _MAX_POOL),
    F.avg_pool2d: _pool_function(_avg_pool, _AVG_POOL),
    F.dropout: _dropout,
}

# Functions of optional libraries, by qualified name (no import needed to match them).
NAMED_FUNCTION_RULES: dict[str, Rule] = {
    "torchvision.ops.stochastic_depth.stochastic_depth": _stochastic_depth,
}

METHOD_RULES: dict[str, Rule] = {
    **{m: _activation("relu") for m in ("relu", "relu_")},
    **{m: _activation("sigmoid") for m in ("sigmoid", "sigmoid_")},
    **{m: _binary("add") for m in ("add", "add_")},
    **{m: _binary("mul") for m in ("mul", "mul_")},
    "flatten": _flatten,
    "view": _view,
    "reshape": _view,
    "mean": _mean,
    "contiguous": lambda s: Mapped(ALIAS, (s.tensor(s.node.args[0]),)),
}
