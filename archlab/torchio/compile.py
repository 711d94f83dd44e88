"""Compile an archlab graph to a ``torch.fx.GraphModule``.

Nodes with state (conv, batch norm, linear) and dropout become submodules at
their node's dotted name, so a zoo model's ``state_dict`` keys equal
torchvision's; every other node becomes a ``call_function``. The result has a
readable generated ``forward`` (``print(module.code)``) and works with
``torch.compile`` and ``torch.export``.
"""
from __future__ import annotations

import keyword
import re
from typing import TYPE_CHECKING, Any, Mapping

from archlab.errors import ArchlabError, GraphError
from archlab.ops import get_op
from archlab.ops.base import SHARES

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import torch.fx

    from archlab.graph import Graph, Node


def fx_name(name: str) -> str:
    """A Python identifier for an IR node name (``layer1.0.conv1`` -> ``layer1_0_conv1``)."""
    s = re.sub(r"\W", "_", name)
    if not s or s[0].isdigit() or keyword.iskeyword(s):
        s = "_" + s
    return s


class EmitContext:
    """What an op's ``emit`` rule uses to add itself to the fx graph."""

    def __init__(self, fx_graph: torch.fx.Graph, graph: Graph):
        self.fx_graph = fx_graph
        self.graph = graph
        self.modules: dict[str, torch.nn.Module] = {}
        self.side: dict[str, Any] = {}  # extra fx values an op leaves for its consumers (max-pool indices)
        self.params: dict[str, tuple[int, ...]] = {}  # dotted name -> shape of a free-standing parameter
        self.buffers: dict[str, tuple[Any, bool]] = {}  # dotted name -> (value, persistent) of a constant
        self._node: Node | None = None

    def call_module(self, node: Node, module: torch.nn.Module, args: list, kwargs: dict | None = None):
        """Register ``module`` at ``node.name`` and call it; a node that shares
        another's weights (:data:`~archlab.ops.base.SHARES`) calls that node's
        module (whichever of the two is emitted first creates it)."""
        path = node.attrs.get(SHARES, node.name)
        self.modules.setdefault(path, module)
        return self.fx_graph.create_node("call_module", path, tuple(args), kwargs or {}, name=fx_name(node.name))

    def parameter(self, node: Node, shape: tuple[int, ...]):
        """Register a free-standing ``nn.Parameter`` of ``shape`` at ``node.name``
        (its ``state_dict`` key is the node's name: ``encoder.pos_embedding``) and
        return the fx value reading it."""
        self.params[node.name] = tuple(shape)
        return self.fx_graph.create_node("get_attr", node.name, (), {}, name=fx_name(node.name) + "_param")

    def buffer(self, node: Node, value: torch.Tensor, *, persistent: bool):
        """Register ``value`` as a buffer at ``node.name`` (in the ``state_dict`` only
        when ``persistent``) and return the fx value reading it."""
        self.buffers[node.name] = (value, persistent)
        return self.fx_graph.create_node("get_attr", node.name, (), {}, name=fx_name(node.name) + "_buffer")

    def call_function(self, fn, args: list, kwargs: dict | None = None):
        """Call a free function; the first call of a node is named after it."""
        name = fx_name(self._node.name) if self._node is not None else None
        self._node = None  # later calls of the same node (n-ary add) get fresh names
        return self.fx_graph.create_node("call_function", fn, tuple(args), kwargs or {}, name=name)


_RESERVED_TOPLEVEL = None


def _check_module_names(graph: Graph, names: list[str]) -> None:
    """Module paths must not nest inside each other or shadow Module attributes."""
    import torch.fx

    global _RESERVED_TOPLEVEL
    if _RESERVED_TOPLEVEL is None:
        _RESERVED_TOPLEVEL = set(dir(torch.fx.GraphModule))
    ordered = sorted(names)
    for a, b in zip(ordered, ordered[1:]):
        if b.startswith(a + "."):
            raise GraphError(
                f"{graph[a].op} '{a}' and {graph[b].op} '{b}': a layer with parameters cannot also be a scope "
                f"of another; rename one of them"
            )
    for n in names:
        top = n.split(".")[0]
        if top in _RESERVED_TOPLEVEL:
            raise GraphError(f"{graph[n].op} '{n}': the name '{top}' is taken by torch.nn.Module; rename the node")
        if any(part == "" for part in n.split(".")):
            raise GraphError(f"{graph[n].op} '{n}': empty scope in name")


def to_module(
    graph: Graph,
    *,
    state_dict: Mapping[str, Any] | None = None,
    strict: bool = True,
    assign: bool = False,
) -> torch.fx.GraphModule:
    """Compile ``graph`` to an ``nn.Module``.

    Args:
        graph: a graph; it is validated first.
        state_dict: weights to load (e.g. torchvision's ``model.state_dict()``);
            keys are the nodes' dotted names plus ``weight``/``bias``/....
        strict: passed to ``load_state_dict``.
        assign: take the given tensors as the module's parameters and buffers
            (no copy; dtype and device follow them) instead of copying them in.

    Returns:
        A ``torch.fx.GraphModule`` whose forward takes the graph inputs in
        order and returns the output tensor, or a dict when there are several.

    Raises:
        ArchlabError: invalid graph, clashing names, or weights that do not fit
            (naming the keys).
    """
    import torch
    import torch.fx

    import contextlib

    graph.validate()
    fx_graph = torch.fx.Graph()
    ctx = EmitContext(fx_graph, graph)
    values: dict[str, Any] = {}
    # With a full state_dict coming, skip random initialisation (it dominates
    # compile time for VGG-sized layers): build on the meta device, then
    # materialise empty tensors and load.
    skip_init = state_dict is not None and strict
    with torch.device("meta") if skip_init else contextlib.nullcontext():
        for node in graph.topo_order():
            if node.op == "input":
                values[node.name] = fx_graph.placeholder(fx_name(node.name))
                continue
            shapes = [graph[i].shape for i in node.inputs]
            ctx._node = node
            values[node.name] = get_op(node.op).emit(ctx, node, [values[i] for i in node.inputs], shapes)
    outs = {k: values[v] for k, v in graph.outputs.items()}
    fx_graph.output(next(iter(outs.values())) if len(outs) == 1 else outs)

    _check_module_names(graph, [*ctx.modules, *ctx.params, *ctx.buffers])
    root = torch.nn.Module()
    for name, mod in ctx.modules.items():
        _assign(root, name, mod)
    for name, shape in ctx.params.items():
        *parents, leaf = name.split(".")
        data = torch.empty(shape)
        if not skip_init:
            torch.nn.init.trunc_normal_(data, std=0.02)  # as ViT's position embeddings and class token
        _assign(root, ".".join(parents), None, param=(leaf, torch.nn.Parameter(data)))
    for name, (value, persistent) in ctx.buffers.items():
        *parents, leaf = name.split(".")
        _assign(root, ".".join(parents), None, buffer=(leaf, value.clone(), persistent))
    gm = torch.fx.GraphModule(root, fx_graph, class_name=fx_name(graph.name))
    gm.eval()
    if skip_init:
        gm.to_empty(device="cpu")
        with torch.no_grad():  # constants have their value whatever the state_dict holds
            for name, (value, _) in ctx.buffers.items():
                gm.get_buffer(name).copy_(value)
    if state_dict is not None:
        load_weights(gm, state_dict, strict=strict, graph_name=graph.name, assign=assign)
    return gm


def _assign(root, dotted: str, module, *, param=None, buffer=None) -> None:
    """Add ``module`` at ``dotted`` (or, with ``param=(name, tensor)``, that
    parameter, with ``buffer=(name, tensor, persistent)`` that buffer, to the
    module at ``dotted``), creating empty parent modules."""
    import torch

    parts = dotted.split(".") if dotted else []
    *parents, leaf = parts if module is not None else (*parts, None)
    cur = root
    for p in parents:
        if not hasattr(cur, p):
            cur.add_module(p, torch.nn.Module())
        cur = getattr(cur, p)
    if param is not None:
        cur.register_parameter(*param)
    elif buffer is not None:
        cur.register_buffer(buffer[0], buffer[1], persistent=buffer[2])
    else:
        cur.add_module(leaf, module)


def load_weights(module, state_dict: Mapping[str, Any], *, strict: bool = True, graph_name: str = "graph",
                 assign: bool = False) -> None:
    """``module.load_state_dict`` with an error that lists the keys and shapes that do not fit.

    A module registered under several paths (a shared layer) has one key per
    path in torch's ``state_dict``; a graph has one per weight. Keys the graph
    lacks whose tensor *is* (same storage, offset, shape and strides) one the
    graph takes are such aliases and are skipped."""
    own = module.state_dict()
    taken = {_tensor_id(state_dict[k]) for k in own if k in state_dict} - {None}
    state_dict = {k: v for k, v in state_dict.items() if k in own or _tensor_id(v) not in taken}
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    bad = [
        f"{k}: {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if bad:
        problems.append("shape mismatch (given vs graph) " + "; ".join(bad[:5]))
    if strict and missing:
        problems.append(f"missing {len(missing)} key(s): {', '.join(missing[:5])}")
    if strict and unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {', '.join(unexpected[:5])}")
    if problems:
        raise ArchlabError(f"weights do not fit graph {graph_name}: " + " | ".join(problems))
    module.load_state_dict(dict(state_dict), strict=strict, assign=assign)


def _tensor_id(t: Any) -> tuple | None:
    """What makes two tensors one (None for a tensor without storage of its own, as on the meta device)."""
    import torch

    if not isinstance(t, torch.Tensor) or t.device.type == "meta" or t.untyped_storage().data_ptr() == 0:
        return None
    return t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride()
