"""The importer's rules for values that are not plain batched tensors:
parameters used as tensors (ViT's class token, layer-scale gammas, reshapes of
them) and permutations that move the batch dim until a consumer takes
elements along it (timm's attention). Mixed into
:class:`archlab.torchio.importer._Importer`, whose state they read."""
from __future__ import annotations

import math

import torch
from torch import fx

from archlab.errors import fmt_shape
from archlab.graph.node import Node as IRNode
from archlab.ops import get_op
from archlab.torchio.import_rules import TUPLE, Mapped, Site, Unmapped
from archlab.torchio.trace import BATCH


class ParameterAndPermuteRules:
    """Methods of the importer (see the module docstring)."""

    _VIEWS = frozenset(("view", "reshape", "unsqueeze", "squeeze", "expand", "flatten", "contiguous", "view_as",
                        "reshape_as", "expand_as"))

    def _param_source(self, n: fx.Node) -> fx.Node | None:
        """The parameter's get_attr node when ``n`` only reshapes a parameter (or a view of one)."""
        name = n.target if n.op == "call_method" else getattr(n.target, "__name__", None)
        if n.op not in ("call_method", "call_function") or name not in self._VIEWS or not n.args:
            return None
        x = n.args[0]
        if not isinstance(x, fx.Node):
            return None
        if x in self.param_views:
            return self.param_views[x]
        return x if x.op == "get_attr" and isinstance(self.values.get(x), torch.nn.Parameter) else None

    def _unpermute(self, s: Site, src: fx.Node) -> Mapped:
        """A consumer of a permute that moved the batch dim (timm's attention:
        ``qkv.permute(2, 0, 3, 1, 4).unbind(0)``): when it takes elements along the
        permuted tensor's dim 0, each is a ``select`` on the unpermuted input plus a
        permute that keeps the batch first."""
        x, dims = self.pending[src]
        n = s.node
        name = n.target if n.op == "call_method" else getattr(n.target, "__name__", "")
        if name == "unbind":
            d = (n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0))
            count, taken = s.shape(src)[0], None
        elif name == "getitem" and isinstance(n.args[1], int):
            d, count, taken = 0, None, n.args[1] % s.shape(src)[0]
        else:
            d = None
        if d != 0 or n.args[0] is not src:
            raise Unmapped(f"reads '{src.name}', a permutation {dims} that moves the batch dim; archlab keeps the "
                           "batch first (taking elements along the moved dim 0 is supported)")
        rest = tuple(k - (k > dims[0]) for k in dims[1:])
        if rest[0] != 0:
            raise Unmapped(f"takes elements of the permutation {dims}, which still leaves the batch dim moved")
        then = () if rest == tuple(range(len(rest))) else (("permute", {"dims": rest}),)

        def element(i: int) -> Mapped:
            return Mapped("select", (x,), {"dim": dims[0], "index": i}, then=then)

        if taken is not None:
            return element(taken)
        return Mapped(TUPLE, parts=tuple(element(i) for i in range(count)))

    def _parameter(self, v: fx.Node, rank: int | None, viewed: tuple[int, ...] | None) -> str:
        """The ``parameter`` node of get_attr ``v``, seen as ``viewed`` (a reshape of it,
        batch-aligned), or as its own shape right-aligned to ``rank`` (broadcasting)."""
        p = self.values.get(v)
        if not isinstance(p, torch.nn.Parameter):
            raise Unmapped(f"reads the buffer or constant '{v.target}' as a tensor; archlab's inputs are computed "
                           "from the model's input (a learned tensor must be an nn.Parameter)")
        stored = tuple(p.shape)
        seen = tuple(viewed) if viewed is not None else stored
        rank = max(rank or 0, len(seen) + (len(seen) == 0))
        aligned = (1,) * (rank - len(seen)) + seen
        shape = aligned[1:] or (1,)
        if aligned[0] not in (1, BATCH) or math.prod(shape) != math.prod(stored):  # BATCH: an expand over it
            raise Unmapped(f"uses parameter '{v.target}' of shape {fmt_shape(stored)} as {fmt_shape(aligned)}; "
                           "archlab broadcasts a parameter over the batch only")
        if v.target in self.params:
            ir_name, had = self.params[v.target]
            if had != shape:
                raise Unmapped(f"uses parameter '{v.target}' as {fmt_shape(shape)} and elsewhere as {fmt_shape(had)}")
            return ir_name
        self._own(v.target, [("", p)], v)
        attrs = get_op("parameter").canonical_attrs(v.target, {"shape": shape, "stored": stored})
        ir = IRNode(v.target, "parameter", (self.input_name,), attrs)
        self._add(ir, None, self._infer(ir, [self.input_shape], None))
        self.scope_of[ir.name] = v.target.rpartition(".")[0]
        self.params[v.target] = (ir.name, shape)
        return ir.name

    def _own(self, owner: str, params: list[tuple[str, torch.nn.Parameter]], n: fx.Node) -> bool:
        """Record that ``owner``'s parameters belong to the node of fx node ``n``;
        whether ``n`` calls ``owner`` again (its node then shares the first call's
        weights). A parameter tied to another module's cannot be expressed."""
        first = self.stateful_calls.setdefault(owner, n.name)
        if first != n.name:
            return True
        for pname, p in params:
            qual = ".".join(x for x in (owner, pname) if x)
            got = self.param_owners.setdefault(id(p), qual)
            if got != qual:
                raise Unmapped(f"its parameter '{pname}' is the same tensor as '{got}': tied weights cannot be "
                               "expressed (every archlab node owns its weights)")
        return False
