"""What a traced value depends on, for :mod:`archlab.torchio.trace`: the model's
input, its parameters, or neither (a constant the importer folds). Kept per fx
node in ``node.meta``; tensors the model computes eagerly (outside the trace,
which torch.fx then captures as constants) are marked by
:class:`EagerParameterMarks`."""
from __future__ import annotations

from typing import Any

import torch
from torch import fx
from torch.fx.node import map_aggregate

DEPENDS = "archlab_depends"
"""``node.meta`` key: what a traced value depends on, a subset of ``{"input", "parameter"}``;
empty for a constant (sizes, buffers, ``x.new_zeros(...)``), which the importer folds."""
FROM_BUFFERS = "archlab_from_buffers"
"""``node.meta`` key of a tensor torch.fx captured as a constant that the model computed
eagerly from persistent buffers: their names."""
SHAPE_ONLY_METHODS = frozenset(("new_zeros", "new_ones", "new_full", "new_empty", "size", "dim"))
SHAPE_ONLY_FUNCTIONS = frozenset((torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like))


class EagerParameterMarks(torch.overrides.TorchFunctionMode):
    """Marks tensors that the model's code computes eagerly (outside the trace) from
    parameters or from persistent buffers: torch.fx captures such a tensor as a
    constant (``_tensor_constant0``), which the importer must not fold as if it were
    neither (see :meth:`ConcreteTracer.value_of`)."""

    def __init__(self, tracer: Any, buffers: dict[int, tuple[str, torch.Tensor]]):
        super().__init__()
        self.tracer = tracer
        self.marked: dict[int, torch.Tensor] = {}  # id -> the tensor (kept alive so ids stay unique)
        self.buffers = buffers  # id -> (name, tensor) of the root's persistent buffers
        self.from_buffers: dict[int, tuple[torch.Tensor, frozenset[str]]] = {}  # id -> (tensor, buffer names)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.tracer._executing:
            seen: list = []
            map_aggregate((args, kwargs), lambda v: seen.append(v) if isinstance(v, torch.Tensor) else None)
            if any(isinstance(t, torch.nn.Parameter) or id(t) in self.marked for t in seen):
                map_aggregate(out, lambda v: self.marked.__setitem__(id(v), v) if isinstance(v, torch.Tensor) else None)
            names = frozenset().union(*(self.buffer_names(t) for t in seen))
            if names:
                map_aggregate(out, lambda v: self.from_buffers.__setitem__(id(v), (v, names))
                              if isinstance(v, torch.Tensor) else None)
        return out

    def buffer_names(self, t: torch.Tensor) -> frozenset[str]:
        """The persistent buffers ``t`` is, or was computed from eagerly."""
        if id(t) in self.buffers and self.buffers[id(t)][1] is t:
            return frozenset((self.buffers[id(t)][0],))
        got = self.from_buffers.get(id(t))
        return got[1] if got is not None and got[0] is t else frozenset()


def depends(node: fx.Node) -> frozenset[str]:
    """What ``node``'s value depends on (see :data:`DEPENDS`); empty for a constant."""
    return node.meta.get(DEPENDS, frozenset())


def proxies(a: Any) -> list[fx.Proxy]:
    found: list[fx.Proxy] = []
    map_aggregate(a, lambda v: found.append(v) if isinstance(v, fx.Proxy) else None)
    return found
