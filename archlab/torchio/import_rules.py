"""The rules :func:`archlab.torchio.importer.from_torch` maps fx nodes with.

Three tables, one per kind of fx node: ``MODULE_RULES`` (by the class of a
leaf module, here), ``FUNCTION_RULES`` (by the called function) and
``METHOD_RULES`` (by Tensor method name), both in
:mod:`archlab.torchio.import_functions`. A rule takes a :class:`Site` (the fx
node, its module and the traced values) and returns a :class:`Mapped` (the
archlab op, the fx nodes feeding it and its attributes), or raises
:class:`Unmapped` saying why the node cannot be expressed. Supporting another
layer or function is one entry there.

A module is a leaf (not traced through) when it has a rule: for its own class,
or for a base class whose ``forward`` it inherits unchanged (timm's
``BatchNormAct2d`` overrides ``forward``, so it is traced through and its
``F.batch_norm`` call is mapped by the functional rule, which names the node
after the module that owns the weights).
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from torch import fx, nn

from archlab.errors import fmt_shape
from archlab.torchio.import_site import (  # noqa: F401 (the rules' vocabulary, re-exported)
    ALIAS,
    TUPLE,
    Mapped,
    Rule,
    Site,
    Unmapped,
)


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


def module_rule(module: nn.Module) -> Rule | None:
    """The rule for a leaf module: its class's (by type, or by qualified name for
    layers of optional libraries), or that of the nearest base class
    whose ``forward`` it inherits unchanged (a subclass that only adds methods
    or defaults); None when the module must be traced through."""
    from archlab.torchio.import_timm import NAMED_MODULE_RULES

    cls = type(module)
    rule = MODULE_RULES.get(cls) or NAMED_MODULE_RULES.get(f"{cls.__module__}.{cls.__qualname__}")
    if rule is not None:
        return rule
    for k, base in enumerate(cls.__mro__[1:], 1):
        if base in MODULE_RULES:
            # a leaf only if nothing between it and the base changes behaviour: a Conv2d subclass that
            # overrides _conv_forward (weight standardisation) is traced through
            changed = {name for klass in cls.__mro__[:k] for name, v in vars(klass).items()
                       if callable(v) and name not in _HARMLESS}
            return MODULE_RULES[base] if not changed else None
    return None


_HARMLESS = frozenset(("__init__", "extra_repr", "reset_parameters", "__repr__", "__setstate__"))


def is_leaf(module: nn.Module, qualified_name: str) -> bool:
    """Whether the importer's tracer stops at ``module`` (it has a rule)."""
    return module_rule(module) is not None


def has_named_rule(qualified_name: str) -> bool:
    """Whether a function registered with ``torch.fx.wrap`` has a rule of its own
    (torchvision's ``stochastic_depth``): the tracer keeps it one call instead
    of tracing through it."""
    from archlab.torchio.import_functions import NAMED_FUNCTION_RULES

    return qualified_name in NAMED_FUNCTION_RULES


def find_rule(node: fx.Node, module: nn.Module | None) -> Rule:
    """The rule for ``node``; one that raises :class:`Unmapped` if there is none."""
    from archlab.torchio.import_functions import (
        FUNCTION_RULES,
        METHOD_RULES,
        NAMED_FUNCTION_RULES,
    )

    if node.op == "call_module":
        rule = module_rule(module)
    elif node.op == "call_function":
        try:
            rule = FUNCTION_RULES.get(node.target)
        except TypeError:  # an unhashable callable
            rule = None
        rule = rule or NAMED_FUNCTION_RULES.get(_qualname(node.target))
    elif node.op == "call_method":
        rule = METHOD_RULES.get(node.target)
    else:
        rule = None
    return rule or _no_rule(node, module)




# -- module rules ----------------------------------------------------------------
def _activation_module(op: str, **attrs: str) -> Rule:
    """A leaf activation module; ``attrs`` maps archlab attribute -> module attribute."""
    return lambda s: Mapped(op, (s.module_input(),), {k: getattr(s.module, a) for k, a in attrs.items()})


def adaptive_avg_pool(x: fx.Node, size: Any, s: Site) -> Mapped:
    shape = s.shape(x)
    if len(shape) != 4:
        raise Unmapped(f"pools a {fmt_shape(shape)} tensor; archlab pools NxCxHxW")
    if isinstance(size, fx.Node) or (isinstance(size, (tuple, list)) and any(isinstance(v, fx.Node) for v in size)):
        raise Unmapped(f"output_size {size!r} is computed at run time; archlab needs a constant")
    size = (size, size) if isinstance(size, int) else tuple(size)
    size = tuple(shape[2 + i] if v is None else v for i, v in enumerate(size))  # None keeps that input size
    return Mapped("adaptive_avg_pool2d", (x,), {"output_size": size})


# Pooling parameters (as torch names them, in F.*_pool2d's order) and their defaults; kernel_size is required.
MAX_POOL = {"kernel_size": None, "stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
            "return_indices": False}
AVG_POOL = {"kernel_size": None, "stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True,
            "divisor_override": None}


def max_pool(x: fx.Node, a: dict[str, Any]) -> Mapped:
    if a.pop("return_indices"):
        raise Unmapped("return_indices=True; archlab's max_pool2d returns values only")
    return Mapped("max_pool2d", (x,), {**a, "stride": a["stride"] or None})  # stride None or [] = kernel size


def avg_pool(x: fx.Node, a: dict[str, Any]) -> Mapped:
    if a.pop("divisor_override") is not None:
        raise Unmapped("divisor_override is set; archlab's avg_pool2d divides by the window size")
    return Mapped("avg_pool2d", (x,), {**a, "stride": a["stride"] or None})


def _pool_module(build: Callable, params: dict[str, Any]) -> Rule:
    return lambda s: build(s.module_input(), {k: getattr(s.module, k) for k in params})


def owner_of(s: Site, **weights: Any) -> str:
    """The module path owning every weight argument (``get_attr`` nodes named
    ``<owner>.<name>``, each name the one archlab's layer uses); None arguments
    are absent weights."""
    owners = set()
    for name, w in weights.items():
        if w is None:
            continue
        if not isinstance(w, fx.Node) or w.op != "get_attr":
            raise Unmapped(f"its {name} is computed at run time (not a module's parameter); archlab layers own "
                           "plain weights")
        owner, _, leaf = w.target.rpartition(".")
        if leaf != name:
            raise Unmapped(f"its {name} is the attribute '{w.target}'; archlab's layer names it '{name}'")
        owners.add(owner)
    if len(owners) != 1 or "" in owners:
        raise Unmapped(f"its weights belong to {len(owners)} modules ({', '.join(sorted(owners)) or 'the root'}); "
                       "archlab's layer owns them all")
    return owners.pop()


def resolve_padding(padding: Any, kernel: int | tuple[int, ...], dilation: int | tuple[int, ...]) -> Any:
    """A convolution's ``padding`` argument with torch's strings resolved, for a
    ``kernel`` and ``dilation`` given as one int (conv1d) or one per axis
    (conv2d): ``'valid'`` is 0; ``'same'`` is half of ``dilation x (kernel - 1)``
    per axis, an int or a tuple as ``kernel`` is; numbers pass unchanged.

    Raises:
        Unmapped: ``'same'`` where an axis pads unevenly (torch puts the extra
            element on one side; archlab pads both sides equally).
    """
    if padding == "valid":
        return 0
    if padding != "same":
        return padding
    one = isinstance(kernel, int)
    total = [d * (k - 1) for k, d in zip((kernel,) if one else kernel, (dilation,) if one else dilation)]
    if any(t % 2 for t in total):
        raise Unmapped(f"padding='same' with kernel {kernel} pads unevenly; archlab pads both sides equally")
    half = tuple(t // 2 for t in total)
    return half[0] if one else half


def conv2d_attrs(weight_shape: tuple[int, ...], bias: bool, stride, padding, dilation, groups) -> dict[str, Any]:
    """conv2d's attributes from a weight's shape and torch's arguments (``padding`` may be 'same'/'valid')."""
    kernel = tuple(weight_shape[2:])
    dilation = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    return dict(out_channels=weight_shape[0], kernel_size=kernel, stride=stride,
                padding=resolve_padding(padding, kernel, dilation), dilation=dilation, groups=groups, bias=bias)


ConvAttrs = Callable[..., dict[str, Any]]
""":func:`conv2d_attrs` or ``import_math.conv1d_attrs``: ``(weight_shape, bias, stride,
padding, dilation, groups)`` to the archlab op's attributes."""


def conv_module(op: str, attrs: ConvAttrs) -> Rule:
    """The rule of a torch convolution layer (``nn.Conv2d``, ``nn.Conv1d``) as
    archlab's ``op``, its attributes from ``attrs``; zero padding only."""
    def rule(s: Site) -> Mapped:
        m = s.module
        if m.padding_mode != "zeros":
            raise Unmapped(f"padding_mode={m.padding_mode!r}; archlab's {op} pads with zeros")
        return Mapped(op, (s.module_input(),), attrs(
            tuple(m.weight.shape), m.bias is not None, m.stride, m.padding, m.dilation, m.groups))

    return rule


def conv_function(op: str, attrs: ConvAttrs) -> Rule:
    """The rule of a functional convolution (``F.conv2d(x, self.weight, self.bias,
    ...)``, ``F.conv1d``) as archlab's ``op``: its weights must belong to one
    module (:func:`owner_of`), whose layer the op becomes."""
    def rule(s: Site) -> Mapped:
        a = s.bind("input", "weight", "bias", "stride", "padding", "dilation", "groups",
                   bias=None, stride=1, padding=0, dilation=1, groups=1)
        owner = owner_of(s, weight=a["weight"], bias=a["bias"])
        return Mapped(op, (s.tensor(a["input"]),), attrs(s.shape(a["weight"]), a["bias"] is not None, a["stride"],
                                                          a["padding"], a["dilation"], a["groups"]), owner=owner)

    return rule


def _linear(s: Site) -> Mapped:
    m: nn.Linear = s.module
    return Mapped("linear", (s.module_input(),), {"out_features": m.out_features, "bias": m.bias is not None})


def batch_norm_attrs(m: nn.Module | None, eps: float, momentum: float | None, affine: bool, tracked: bool) -> dict:
    momentum = m.momentum if isinstance(m, nn.modules.batchnorm._BatchNorm) else momentum
    if momentum is None:
        raise Unmapped("momentum=None (cumulative average); archlab's batch_norm2d uses an exponential average")
    return dict(eps=eps, momentum=momentum, affine=affine, track_running_stats=tracked)


def batch_norm_op(s: Site, x: fx.Node) -> str:
    """``batch_norm2d`` on NxCxHxW, ``batch_norm1d`` on NxC and NxCxL."""
    rank = len(s.shape(x))
    if rank not in (2, 3, 4):
        raise Unmapped(f"batch norm on a {fmt_shape(s.shape(x))} tensor; archlab's take NxC, NxCxL or NxCxHxW")
    return "batch_norm2d" if rank == 4 else "batch_norm1d"


def _batch_norm(s: Site) -> Mapped:
    m: nn.BatchNorm2d = s.module
    x = s.module_input()
    return Mapped(batch_norm_op(s, x), (x,), batch_norm_attrs(m, m.eps, m.momentum, m.affine, m.track_running_stats))


def _layer_norm(s: Site) -> Mapped:
    m: nn.LayerNorm = s.module
    return Mapped("layer_norm", (s.module_input(),), dict(
        normalized_dims=len(m.normalized_shape), eps=m.eps, elementwise_affine=m.elementwise_affine,
        bias=m.bias is not None))


def _group_norm(s: Site) -> Mapped:
    m: nn.GroupNorm = s.module
    return Mapped("group_norm", (s.module_input(),), dict(num_groups=m.num_groups, eps=m.eps, affine=m.affine))


def _hardtanh(s: Site) -> Mapped:
    if (s.module.min_val, s.module.max_val) == (0.0, 6.0):
        return Mapped("relu6", (s.module_input(),))
    return Mapped("hardtanh", (s.module_input(),), {"min_val": s.module.min_val, "max_val": s.module.max_val})


def _multihead_attention(s: Site) -> Mapped:
    """``attn(x, x, x, need_weights=False)``: self-attention on batch-first tokens;
    its value is the tuple (output, None)."""
    m: nn.MultiheadAttention = s.module
    args = list(s.node.args) + [s.node.kwargs.get(k) for k in ("query", "key", "value") if k in s.node.kwargs]
    extra = {k: v for k, v in s.node.kwargs.items() if k not in ("query", "key", "value")}
    if len(args) != 3 or not (args[0] is args[1] is args[2]):
        raise Unmapped("MultiheadAttention with distinct query, key and value; archlab maps self-attention only")
    if extra != {"need_weights": False} or not m.batch_first or m.bias_k is not None or not m._qkv_same_embed_dim \
            or m.add_zero_attn or (m.dropout > 0 and m.training):
        raise Unmapped("MultiheadAttention other than batch_first self-attention with need_weights=False, no masks, "
                       "no bias_k/bias_v, no add_zero_attn and no dropout in training mode")
    x = s.tensor(args[0])
    if len(s.shape(x)) != 3:
        raise Unmapped(f"MultiheadAttention on a {fmt_shape(s.shape(x))} tensor; archlab maps batch x tokens x dim")
    node = Mapped("multihead_attention", (x,), dict(embed_dim=m.embed_dim, num_heads=m.num_heads,
                                                  bias=m.in_proj_bias is not None))
    return Mapped(TUPLE, parts=(node, None))


MODULE_RULES: dict[type, Rule] = {
    nn.Conv2d: conv_module("conv2d", conv2d_attrs),
    nn.Linear: _linear,
    nn.BatchNorm2d: _batch_norm,
    nn.BatchNorm1d: _batch_norm,
    nn.LayerNorm: _layer_norm,
    nn.GroupNorm: _group_norm,
    nn.ReLU: _activation_module("relu"),
    nn.ReLU6: _activation_module("relu6"),
    nn.Hardtanh: _hardtanh,
    nn.Sigmoid: _activation_module("sigmoid"),
    nn.Hardswish: _activation_module("hardswish"),
    nn.Hardsigmoid: _activation_module("hardsigmoid"),
    nn.SiLU: _activation_module("silu"),
    nn.GELU: _activation_module("gelu", approximate="approximate"),
    nn.LeakyReLU: _activation_module("leaky_relu", negative_slope="negative_slope"),
    nn.Mish: _activation_module("mish"),
    nn.Tanh: _activation_module("tanh"),
    nn.ELU: _activation_module("elu", alpha="alpha"),
    nn.Softplus: _activation_module("softplus", beta="beta", threshold="threshold"),
    nn.Softmax: lambda s: Mapped("softmax", (s.module_input(),), {"dim": s.dim(s.module.dim, s.module_input())}),
    nn.Identity: _activation_module("identity"),
    nn.MaxPool2d: _pool_module(max_pool, MAX_POOL),
    nn.AvgPool2d: _pool_module(avg_pool, AVG_POOL),
    nn.AdaptiveAvgPool2d: lambda s: adaptive_avg_pool(s.module_input(), s.module.output_size, s),
    nn.Dropout: lambda s: Mapped("dropout", (s.module_input(),), {"p": s.module.p}),
    nn.MultiheadAttention: _multihead_attention,
}
