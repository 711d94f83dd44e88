"""The importer's rules for values whose torch dim 0 is not the batch.

archlab keeps the batch as dim 0 of every tensor and the IR shape excludes it.
Three kinds of traced values break that, and each is held *shifted*: its IR
shape is its whole traced shape (batch 1), and its torch dim ``d`` is IR dim
``d + 1``:

* **constants**, which depend on neither the input nor a parameter (Swin's shift
  mask, built from sizes with ``new_zeros`` and item assignment; buffers such
  as a relative-position index): folded, where a computed value first reads
  them, into one ``constant`` node holding the traced value (a persistent
  buffer read as it is keeps its name, so ``state_dict`` keys match);
* **parameter-derived** values, which depend on parameters but not on the input
  (Swin's relative-position bias ``table[index].view(...).permute(...)``, its v2
  MLP over a constant coordinate table): ops on a ``parameter`` node, which is
  expanded over the batch, so they are computed (and counted) per sample;
  FlopCounterMode counts such work once per forward, which equals the
  per-sample count at batch 1 only;
* **window-folded** values, whose dim 0 merges the batch with windows (Swin's
  ``(B * num_windows, tokens, C)``): held as ``(num_windows, tokens, C)`` after
  the batch. A reshape moves between folded and batched freely (the batch stays
  the outermost factor of the layout); any other op on a folded value must
  leave dim 0 alone (:data:`FOLD_SAFE`).

Where a shifted value meets a batched one (``attn + bias``), it is aligned as
torch broadcasting aligns it: padded with leading 1s to the consumer's rank,
and, for a batched consumer, its leading 1 (the batch's place) dropped.
Mixed into :class:`archlab.torchio.importer._Importer`, whose state it reads.
"""
from __future__ import annotations

import operator

import numpy as np
import torch.nn.functional as F
import torch
from torch import fx

from archlab.errors import fmt_shape
from archlab.graph.node import Node as IRNode
from archlab.ops import get_op
from archlab.ops.constant import DTYPES, encode
from archlab.torchio.import_rules import ALIAS, TUPLE, Mapped, Site, Unmapped, find_rule, module_rule
from archlab.torchio.trace import BATCH, FROM_BUFFERS, depends

RESHAPES = frozenset(("view", "reshape", "flatten", "squeeze", "unsqueeze", "contiguous", "view_as", "reshape_as",
                      "clone", "detach"))
"""Methods and functions (by name) that only re-lay a shifted value out."""
FOLD_SAFE = frozenset(("linear", "layer_norm", "matmul", "sdpa", "add", "sub", "mul", "div", "scalar", "softmax", "dropout",
                       "identity", "select", "slice", "permute", "reshape", "reduce", "concat", "pad", "roll",
                       "index_select", "normalize", "norm", "clamp", "exp", "log"))
"""Ops that may take a shifted input (besides element-wise activations): none
touches dim 0 once its dims are shifted."""
BROADCASTING = frozenset(("add", "sub", "mul", "div", "matmul", "sdpa"))  # sdpa: its mask


def _name_of(n: fx.Node) -> str:
    return n.target if n.op == "call_method" else getattr(n.target, "__name__", str(n.target))


def _tensor_index(index) -> tuple[int, fx.Node] | None:
    """``(dim, tensor)`` when ``index`` takes along one dim by a tensor after full
    slices (``t[idx]``: dim 0, ``t[:, idx]``: dim 1), else None."""
    if isinstance(index, fx.Node):
        return 0, index
    if isinstance(index, tuple) and index and isinstance(index[-1], fx.Node) and \
            all(i == slice(None) for i in index[:-1]):
        return len(index) - 1, index[-1]
    return None


class ShiftedRules:
    """Methods of the importer (see the module docstring)."""

    # -- classification --------------------------------------------------------
    def _is_constant(self, n: fx.Node) -> bool:
        return n.op != "placeholder" and not depends(n) and isinstance(self.values.get(n), torch.Tensor)

    def _is_parameter(self, n: fx.Node) -> bool:
        return n.op == "get_attr" and isinstance(self.values.get(n), torch.nn.Parameter)

    def _note_single_sample(self, n: fx.Node, module, site: Site) -> None:
        """A layer (a leaf module) that runs on one sample computed without the input
        (XCiT's and EdgeNeXt's Fourier position encoding: a conv over a constant
        grid, then ``repeat(B, 1, 1, 1)``) runs on it as on a batch: ``n`` and what
        is computed from it are held batched (:attr:`single_sample`), the
        constant's leading 1 taking the batch's place. Its work is counted per
        sample, as the other work computed without the input is."""
        if "input" in depends(n):
            return
        inputs = [i for i in n.all_input_nodes if isinstance(self.results.get(i), tuple)]
        if any(i in self.single_sample for i in inputs) or (
                n.op == "call_module" and module_rule(module) is not None and inputs
                and all(self.results[i][:1] == (1,) for i in inputs) and not self._shifts(module_rule(module), site)):
            self.single_sample.add(n)

    @staticmethod
    def _shifts(rule, site: Site) -> bool:
        """Whether the layer's op can run shifted (:data:`FOLD_SAFE`: Swin V2's MLP over
        a coordinate table stays a shifted parameter-derived value)."""
        try:
            op = rule(site).op
        except Unmapped:
            return False
        return op in FOLD_SAFE or op in (ALIAS, TUPLE) or type(get_op(op)).__module__ == "archlab.ops.activation"

    def _shifted(self, n: fx.Node) -> bool:
        """Whether ``n``'s IR shape is its whole traced shape (see the module docstring)."""
        if not isinstance(n, fx.Node) or n in self.pending or n in self.single_sample:
            return False
        if "input" not in depends(n):
            return isinstance(self.values.get(n), torch.Tensor) or n in self.param_views
        s = self.results.get(n)
        return isinstance(s, tuple) and len(s) >= 1 and s[0] != BATCH

    def _shifted_map(self, s: Site) -> Mapped:
        """The rule for a node with a shifted input or output: re-layouts and
        permutations here, every other rule as usual with its dims shifted."""
        n = s.node
        name = _name_of(n)
        x = n.args[0] if n.args else None
        if name not in RESHAPES and name not in ("permute", "transpose", "swapaxes", "getitem"):
            module = self.modules.get(n.target) if n.op == "call_module" else None
            return self._shift(find_rule(n, module)(s), n)
        if n.target is operator.getitem and isinstance(x, fx.Node) and not isinstance(self.results.get(x), tuple):
            return find_rule(n, None)(s)  # an element of a tuple (split, unbind): itself
        if not isinstance(x, fx.Node) or self.results.get(x) is None:
            raise Unmapped(f"{name} of {x!r}: archlab needs a tensor")
        rank = len(self.results[x])
        if name in RESHAPES:
            before, after = self._ir_shape(x), self._ir_shape(n)
            if after is None:
                raise Unmapped(f"its result {fmt_shape(self.results.get(n))} is not a tensor archlab can hold")
            if "input" in depends(n):
                self._check_fold(s, name, x)
            return Mapped(ALIAS, (x,)) if before == after else Mapped("reshape", (x,), {"shape": after})
        if name in ("permute", "transpose", "swapaxes"):
            if name == "permute":
                dims = n.args[1:] if n.op == "call_method" else (n.args[1:2] or (n.kwargs.get("dims"),))
                dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else tuple(dims)
            else:
                a = s.bind("input", "dim0", "dim1")
                dims = list(range(rank))
                dims[a["dim0"]], dims[a["dim1"]] = dims[a["dim1"]], dims[a["dim0"]]
            dims = tuple(d % rank for d in dims if isinstance(d, int))
            if sorted(dims) != list(range(rank)):
                raise Unmapped(f"permutes with dims {dims!r}; archlab needs a constant permutation")
            if not self._shifted(x):  # a batched input: moving the batch is the importer's usual business
                return find_rule(n, None)(s)
            if dims[0] != 0 and "input" in depends(n):  # moves the folded batch: the importer waits for a consumer
                return Mapped("permute", (x,), {"dims": dims})
            out = (0, *(d + 1 for d in dims))
            return Mapped(ALIAS, (x,)) if dims == tuple(range(rank)) else Mapped("permute", (x,), {"dims": out})
        if n.target is operator.getitem and _tensor_index(n.args[1]) is not None:
            return self._gather(s, x, *_tensor_index(n.args[1]))
        module = self.modules.get(n.target) if n.op == "call_module" else None
        return self._shift(find_rule(n, module)(s), n)

    def _check_fold(self, s: Site, name: str, x: fx.Node) -> None:
        """A re-layout of a computed tensor keeps the batch the outermost factor:
        ``squeeze``/``unsqueeze`` must name a dim other than 0 (the usual rule), and
        a reshape that merges the batch into dim 0 must merge it with whole leading
        dims (``(B, 8, 8, 49, C) -> (B * 64, 49, C)``)."""
        before, after = self.results[x], self.results[s.node]
        if name in ("squeeze", "unsqueeze"):
            find_rule(s.node, None)(s)  # raises for dim 0 or no dim
        elif not self._shifted(x) and self._shifted(s.node):
            sizes = [int(np.prod(before[:j])) for j in range(2, len(before) + 1)]
            if after[0] not in sizes:
                raise Unmapped(f"reshapes {fmt_shape(before)} to {fmt_shape(after)}, changing the batch dim other "
                               "than by merging it with whole leading dims")

    def _gather(self, s: Site, x: fx.Node, dim: int, index: fx.Node) -> Mapped:
        """``table[index]`` / ``table[:, index]`` with a constant integer index:
        ``index_select`` on torch dim ``dim`` (shifted: IR dim ``dim + 1``)."""
        v = self.values.get(index)
        if not self._is_constant(index) or not isinstance(v, torch.Tensor) or v.dim() < 1 or v.is_floating_point() \
                or v.dtype == torch.bool:
            raise Unmapped(f"indexes with the tensor '{index.name}'; archlab gathers by a constant integer index")
        if bool((v < 0).any()):
            raise Unmapped(f"indexes with '{index.name}', which holds negative positions; archlab's index_select "
                           "takes positions from 0 (add the dim's size to them)")
        if "input" in depends(x) and (dim == 0 or not self._shifted(x)):
            raise Unmapped(f"gathers along a dim of '{x.name}' computed from the input; archlab gathers from "
                           "tables computed without it")
        return Mapped("index_select", (x, index), {"dim": dim + 1})

    def _shift(self, mapped: Mapped, n: fx.Node) -> Mapped:
        """``mapped`` (in torch dims) for shifted values: every dim one later."""
        if mapped.op == TUPLE:
            return Mapped(TUPLE, parts=tuple(None if p is None else self._shift(p, n) for p in mapped.parts))
        if mapped.op == ALIAS:
            src = mapped.inputs[0]
            if "element" not in mapped.attrs and self._ir_shape(src) != self._ir_shape(n):
                raise Unmapped(f"gives {fmt_shape(self.results.get(n))} from {fmt_shape(self.results.get(src))}, "
                               "which archlab cannot hold as the same tensor (the batch dim changes)")
            return mapped
        inputs = [i for i in mapped.inputs if isinstance(i, fx.Node)]
        ranks = [len(self.results[i]) for i in inputs if isinstance(self.results.get(i), tuple)]
        if any(self._shifted(i) and "input" in depends(i) for i in inputs):  # folded: dim 0 holds the batch
            if min(ranks, default=0) < (3 if mapped.op == "matmul" else 2):
                raise Unmapped(f"{mapped.op} on a tensor whose dim 0 merges the batch with windows, at rank "
                               f"{min(ranks)}; archlab needs the op to leave dim 0 alone")
        steps = [(mapped.op, mapped.attrs), *mapped.then]
        out = []
        for k, (op, attrs) in enumerate(steps):
            definition = get_op(op)
            if op == "batch_norm1d" and len(steps) == 1 and min(ranks, default=0) == 2 and \
                    any(self._shifted(i) and "input" in depends(i) for i in inputs):
                # (B * L, C) rows of folded tokens (LeViT): a per-channel affine of each token
                out.append((op, {**attrs, "channels_last": True}))
                continue
            if op not in FOLD_SAFE and type(definition).__module__ != "archlab.ops.activation":
                raise Unmapped(f"{op} on a tensor whose dim 0 is not the batch (windows merged into it, or a "
                               "tensor computed without the input); archlab cannot shift its dims")
            attrs = dict(attrs)
            if "dim" in attrs and isinstance(attrs["dim"], int) and attrs["dim"] >= 0:
                attrs["dim"] += 1
            if "dims" in attrs:
                dims = tuple(d + 1 if d >= 0 else d for d in attrs["dims"])
                attrs["dims"] = (0, *dims) if op == "permute" else dims
            if op == "reshape" and k == len(steps) - 1:
                attrs["shape"] = self._ir_shape(n)
            out.append((op, attrs))
        (op, attrs), *then = out
        return Mapped(op, mapped.inputs, attrs, then=tuple(then), owner=mapped.owner)

    # -- inputs -------------------------------------------------------------------
    def _shifted_source(self, v: fx.Node) -> str:
        """The IR node holding ``v`` with its whole traced shape."""
        if v.op == "get_attr" and isinstance(self.values.get(v), torch.nn.Parameter):
            return self._parameter(v, None, (1, *self.values[v].shape))
        if v in self.param_views:
            src = self._parameter(self.param_views[v], None, (1, *self.values[self.param_views[v]].shape))
            return self._reshaped(src, tuple(self.results[v]))
        if self._is_constant(v):
            return self._constant(v)
        held = self.value.get(v)
        if v.op == "get_attr":
            raise Unmapped(f"reads '{v.target}', a tensor computed from parameters outside the trace (torch.fx "
                           "captured it as a constant); read parameters as module attributes in forward")
        if not isinstance(held, str):
            raise Unmapped(f"uses '{v.name}', which archlab does not hold as one tensor")
        return held

    def _aligned(self, v: fx.Node, rank: int | None, shifted: bool, broadcasting: bool) -> str:
        """``v`` (shifted) as a consumer of torch rank ``rank`` sees it (module docstring)."""
        name = self._shifted_source(v)
        shape = tuple(self.results[v]) or (1,)
        if shifted and not broadcasting:
            return name
        rank = max(rank or 0, len(shape))
        aligned = (1,) * (rank - len(shape)) + shape
        if not shifted:
            if aligned[0] != 1 or len(aligned) < 2:
                raise Unmapped(f"uses '{v.name}' ({fmt_shape(shape)}, computed without the input) where torch "
                               f"broadcasts it over the batch as {fmt_shape(aligned)}; archlab needs a leading 1 there")
            aligned = aligned[1:]
        return name if aligned == self.ir_shapes.get(name) else self._reshaped(name, aligned)

    def _reshaped(self, name: str, shape: tuple[int, ...]) -> str:
        """A reshape of IR node ``name`` to ``shape`` (one per pair)."""
        key = (name, shape)
        if key in self.reshaped:
            return self.reshaped[key]
        base, k = f"{name}.reshape", 0
        ir_name = base
        while ir_name in self.ir_shapes:
            k += 1
            ir_name = f"{base}_{k}"
        ir = IRNode(ir_name, "reshape", (name,), get_op("reshape").canonical_attrs(ir_name, {"shape": shape}))
        self._add(ir, None, self._infer(ir, [self.ir_shapes[name]], None))
        self.scope_of[ir_name] = self.scope_of.get(name, "")
        self.reshaped[key] = ir_name
        return ir_name

    def _constant(self, v: fx.Node) -> str:
        """The ``constant`` node folding fx value ``v`` (see the module docstring)."""
        self.shifted_used = True  # a constant read before the model changes it shows only in a second run
        if v not in self.constants and self._buffer_view(v) is not None:
            buffer_name, buffer = self._buffer_view(v)
            if buffer_name not in self.constants:  # one node per persistent buffer, named after it
                self.constants[buffer_name] = self._constant_ir(buffer, buffer_name, True)
            self.constants[v] = self._reshaped(self.constants[buffer_name], tuple(self.values[v].shape) or (1,))
        if v not in self.constants:
            persistent = self._check_sources(v)
            self.constants[v] = self._constant_ir(self.values[v], v.target if v.op == "get_attr" else
                                                  self._scope_base(v, "constant"), persistent)
        return self.constants[v]

    def _buffer_view(self, v: fx.Node) -> tuple[str, torch.Tensor] | None:
        """``(name, buffer)`` when constant ``v`` is a reshape of one persistent buffer
        that the model made eagerly (``self.relative_position_index.view(-1)``):
        folded as the buffer, so its ``state_dict`` key stays."""
        names = v.meta.get(FROM_BUFFERS) or ()
        if v.op != "get_attr" or len(names) != 1:
            return None
        (name,) = names
        owner, _, leaf = name.rpartition(".")
        module = self.modules.get(owner)
        buffer = module._buffers.get(leaf) if module is not None else None
        value = self.values[v]
        if buffer is None or not buffer.is_contiguous() or not value.is_contiguous() or value.dtype != buffer.dtype \
                or value.numel() != buffer.numel() or value.data_ptr() != buffer.data_ptr():
            return None
        return name, buffer

    @staticmethod
    def _scope_base(v: fx.Node, op: str) -> str:
        stack = v.meta.get("nn_module_stack") or {}
        scope = next(reversed(stack)) if stack else ""
        return f"{scope}.{op}" if scope else op

    def _constant_ir(self, value: torch.Tensor, base: str, persistent: bool) -> str:
        """A ``constant`` node holding ``value``, named ``base`` (made unique)."""
        value = value.detach().cpu()
        dtype = str(value.dtype).replace("torch.", "")
        if dtype not in DTYPES:
            raise Unmapped(f"uses a constant of dtype {dtype}; archlab's constants are {', '.join(DTYPES)}")
        name, k = base, 0
        while name in self.ir_shapes:
            k += 1
            name = f"{base}_{k}"
        shape = tuple(value.shape) or (1,)
        data = encode(np.ascontiguousarray(value.numpy()).tobytes())
        attrs = get_op("constant").canonical_attrs(name, {"shape": shape, "dtype": dtype, "data": data,
                                                           "persistent": persistent})
        ir = IRNode(name, "constant", (self.input_name,), attrs)
        self._add(ir, None, self._infer(ir, [self.input_shape], None))
        self.scope_of[name] = name.rpartition(".")[0]
        return name

    # -- in-place writes and layers on computed weights ---------------------------------------
    def _functionalise(self, nodes: list[fx.Node], live: set[fx.Node]) -> None:
        """``b = bias.clone(); b[i:j].zero_()`` on a tensor computed without the input
        (Swin v2's qkv bias, its key third zeroed) is ``bias * mask``: the clone's
        value becomes that product when every reader of the clone comes after the
        writes. Fills :attr:`zeroed` and :attr:`functionalised`."""
        order = {n: i for i, n in enumerate(nodes)}
        writes: dict[fx.Node, list[fx.Node]] = {}
        for n in nodes:
            view = n.args[0] if n.op == "call_method" and n.target == "zero_" and n.args else None
            if not (isinstance(view, fx.Node) and view.target is operator.getitem and len(view.users) == 1):
                continue
            c, index = view.args
            if isinstance(c, fx.Node) and _name_of(c) == "clone" and "input" not in depends(c) and \
                    not any(isinstance(i, fx.Node) for i in (index if isinstance(index, tuple) else (index,))):
                writes.setdefault(c, []).append(n)
        for c, zeros in writes.items():
            last = max(order[z] for z in zeros)
            readers = [u for u in c.users if u.target is not operator.getitem or u.users.keys() - set(zeros)]
            if any(order[u] < last for u in readers):
                continue  # read before it is written: left to the in-place check
            mask = torch.ones_like(self.values[c])
            for z in zeros:
                mask[z.args[0].args[1]] = 0
            self.zeroed[c] = mask
            self.functionalised.update(zeros)

    def _computed(self, n: fx.Node) -> str | None:
        """IR for the nodes :meth:`_functionalise` rewrote, for ``F.linear`` with a
        weight or bias computed without the input (``x @ w.T + b`` as ``matmul`` and
        ``add`` on ``parameter``-derived values), and for ``torch.einsum``
        (:func:`archlab.torchio.import_windows.einsum_ir`); None for any other node."""
        if n.op == "call_function" and n.target in (torch.functional.einsum, torch.einsum):
            from archlab.torchio.import_windows import einsum_ir

            return einsum_ir(self, n)
        if n in self.zeroed:
            src = self._shifted_source(n.args[0])
            mask = self._constant_ir(self.zeroed[n], self._scope_base(n, "mask"), False)
            return self._ir_node(n, "mul", (src, mask), {})
        if n.op != "call_function" or n.target is not F.linear:
            return None
        s = Site(n, None, self.results, self.values, self.modules)
        a = s.bind("input", "weight", "bias", bias=None)
        plain = [w for w in (a["weight"], a["bias"]) if w is not None]
        if all(isinstance(w, fx.Node) and w.op == "get_attr" for w in plain):
            return None  # a module's own weights: the linear rule
        if any(not isinstance(w, fx.Node) or "input" in depends(w) for w in plain):
            raise Unmapped("F.linear with a weight computed from the input; archlab's linear takes learned weights")
        x = s.tensor(a["input"])
        if len(self.results[x]) < 2 + (not self._shifted(x)):
            raise Unmapped(f"F.linear with computed weights on a {fmt_shape(self.results[x])} tensor; archlab needs "
                           "tokens (a rank >= 2 sample)")
        shifted = self._shifted(n)
        rank = len(self.results[n])
        w = self._ir_node(n, "permute", (self._shifted_source(a["weight"]),), {"dims": (0, 2, 1)})
        w = self._reshaped(w, (1,) * (len(self._ir_shape(x)) - 2) + tuple(self.ir_shapes[w]))
        held = self.value.get(x)
        if not isinstance(held, str):
            raise Unmapped(f"F.linear of '{x.name}', which archlab does not hold as one tensor")
        out = self._ir_node(n, "matmul", (held, w), {})
        if a["bias"] is not None:
            out = self._ir_node(n, "add", (out, self._aligned(a["bias"], rank, shifted, True)), {})
        if self.ir_shapes[out] != self._ir_shape(n):
            raise Unmapped(f"archlab's matmul gives {fmt_shape(self.ir_shapes[out])} where torch gives "
                           f"{fmt_shape(self._ir_shape(n))}")
        return out

    def _ir_node(self, n: fx.Node, op: str, inputs: tuple[str, ...], attrs: dict) -> str:
        """One IR node for (part of) fx node ``n``, named after its scope and op."""
        name = self._name(n, op, inputs)
        ir = IRNode(name, op, inputs, get_op(op).canonical_attrs(name, attrs))
        self._add(ir, None, self._infer(ir, [self.ir_shapes[i] for i in inputs], None))
        self.scope_of[name] = name.rpartition(".")[0]
        return name

    def _check_sources(self, v: fx.Node) -> bool:
        """A constant computed from a persistent buffer would drop that buffer's
        ``state_dict`` key: refused. Returns whether ``v`` is itself a persistent buffer."""
        seen, todo = set(), [v]
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            if n.meta.get(FROM_BUFFERS):
                raise Unmapped(f"uses a constant computed from the persistent buffer(s) "
                               f"{', '.join(map(repr, sorted(n.meta[FROM_BUFFERS])))}, whose state_dict key the "
                               "graph would lose")
            if n.op == "get_attr":
                owner, _, leaf = n.target.rpartition(".")
                module = self.modules.get(owner)
                if module is not None and leaf in module._buffers and leaf not in module._non_persistent_buffers_set:
                    if n is v:
                        return True
                    raise Unmapped(f"uses a constant computed from the persistent buffer '{n.target}', whose "
                                   "state_dict key the graph would lose")
            todo.extend(i for i in n.all_input_nodes if not depends(i))
        return False
