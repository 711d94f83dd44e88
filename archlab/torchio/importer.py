"""Import a PyTorch model into the archlab IR: the inverse of :func:`to_module`.

:func:`from_torch` traces the model on one example input with
:func:`archlab.torchio.trace.concrete_trace` (``torch.fx`` with values
riding along, so code that computes sizes from ``x.shape`` traces, specialised
on that input), then maps each fx node through a table of rules
(:mod:`archlab.torchio.import_rules`, :mod:`archlab.torchio.import_functions`)
to archlab nodes. Nodes that cannot be mapped are collected and reported
together in one :class:`ImportTorchError`; nothing is dropped silently.

Every node is named by its module path: a layer with weights by the module
that owns them (``layer1.0.conv1``), so ``to_module(graph,
state_dict=model.state_dict())`` loads the original weights; a parameterless
op by its module scope and op (``features.1.0.block.add``; ops called in the
model's own ``forward`` join the scope of their first input, ``avgpool.flatten``),
so ``--depth`` groups an imported model as it groups a zoo model. A
free-standing parameter used as a tensor (ViT's class token) is a
``parameter`` node named by its qualified name.
"""
from __future__ import annotations

import functools
import inspect
import itertools
from typing import Any

import torch
from torch import fx

from archlab.errors import ArchlabError, ImportTorchError, fmt_shape
from archlab.graph import Graph
from archlab.graph.node import Node as IRNode
from archlab.ops import get_op
from archlab.ops.base import SHARES
from archlab.torchio.import_check import check_at_another_batch
from archlab.torchio.import_errors import import_error
from archlab.torchio.import_rules import (
    ALIAS, TUPLE, Mapped, Site, Unmapped, find_rule, short_target, target_name,
)
from archlab.torchio.import_shifted import BROADCASTING, ShiftedRules
from archlab.torchio.import_values import ParameterAndPermuteRules
from archlab.torchio.trace import BATCH, depends
from archlab.torchio.trace_import import import_trace as _trace
from archlab.torchio.trace_import import one_line as _one_line


def from_torch(module: torch.nn.Module, input_shape: tuple[int, ...], *, name: str | None = None) -> Graph:
    """Trace ``module`` on an example input and express it as an archlab graph.

    The model runs once, on zeros of ``input_shape`` (batch 1), in its current
    mode: call ``model.eval()`` first for the inference graph (no auxiliary
    heads, stochastic depth as the identity). Python code on sizes
    (``x.shape``, "same" padding) is specialised on that input; control flow
    on tensor values is refused. The module's buffers (batch-norm statistics
    a training-mode run would update) and training flags are restored, and its
    weights are not touched. ``x.view(x.size(0), -1)`` is imported as
    ``flatten``, whatever batch size the model later sees.

    Args:
        module: any ``nn.Module`` whose forward takes one tensor (a
            ``torch.fx.GraphModule`` too, e.g. from ``create_feature_extractor``).
        input_shape: one input's shape without the batch dimension, ``(3, 224, 224)``.
        name: the graph's name; defaults to the module's class name.

    Returns:
        A validated graph with one input (named after ``forward``'s argument) and
        output ``out``, or one output per key when ``forward`` returns a dict or
        a named tuple. Weights are not copied: pass ``module.state_dict()`` to
        :func:`archlab.to_module`. State of submodules the forward never calls
        (e.g. auxiliary heads skipped in eval mode) has no node, so load such
        a state_dict with ``strict=False``.

    Raises:
        ImportTorchError: the model cannot be traced or fails on the given
            input shape, or some nodes cannot be expressed (each kind named
            once, with its count and first node).
    """
    cls = type(module).__qualname__
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ImportTorchError(f"from_torch({cls}): input_shape must be a tuple of ints, got {input_shape!r}") from None
    fx_graph, values = _trace(module, shape)
    results = {n: tuple(v.shape) if isinstance(v, torch.Tensor) else type(v) for n, v in values.items()}
    importer = _Importer(fx_graph, dict(module.named_modules()), results, values, shape)
    graph = importer.run(name or type(module).__name__, cls)
    try:
        graph.validate()
    except ArchlabError as e:  # a mapping rule let through something archlab rejects
        raise ImportTorchError(f"cannot import {cls}: the imported graph does not validate: {e}") from None
    if importer.shifted_used:  # what batch 1 cannot show (import_check)
        check_at_another_batch(module, graph, shape, cls)
    return graph


def _inplace_arg(node: fx.Node) -> bool:
    """Whether a function call passes ``inplace=True`` (by keyword or position)."""
    if "inplace" in node.kwargs:
        return node.kwargs["inplace"] is True
    i = _inplace_position(node.target)
    return i is not None and i < len(node.args) and node.args[i] is True


@functools.lru_cache(maxsize=1024)
def _inplace_position(fn: Any) -> int | None:
    """The position of ``fn``'s ``inplace`` parameter, or None (``inspect.signature``
    parses a builtin's text signature: cached, it was a tenth of an import)."""
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None
    return params.index("inplace") if "inplace" in params else None


def _namedtuple_packer(output: fx.Node) -> fx.Node | None:
    """The node building a named tuple that ``forward`` returns (fx records the
    constructor call), or None."""
    ret = output.args[0]
    if isinstance(ret, fx.Node) and ret.op == "call_function" and isinstance(ret.target, type) \
            and issubclass(ret.target, tuple) and hasattr(ret.target, "_fields") and len(ret.users) == 1:
        return ret
    return None


class _Importer(ShiftedRules, ParameterAndPermuteRules):
    """One import: walks the fx graph once, collecting archlab nodes and problems."""

    def __init__(self, fx_graph: fx.Graph, modules: dict[str, torch.nn.Module], results: dict[fx.Node, Any],
                 values: dict[fx.Node, Any], input_shape: tuple[int, ...]):
        self.fx_graph = fx_graph
        self.results = results
        self.values = values
        self.input_shape = input_shape
        self.modules = modules  # the model's own, by path (the GraphModule keeps only what the graph reads)
        # fx node -> archlab node name, or a tuple of names (None: an element archlab does not compute)
        self.value: dict[fx.Node, str | tuple[str | None, ...]] = {}
        self.ir_shapes: dict[str, tuple[int, ...] | None] = {}
        self.ir_nodes: list[IRNode] = []
        self.problems: list[tuple[str, str, str, str]] = []  # (fx node, short target, "kind target: " or "", reason)
        self.stateful_calls: dict[str, str] = {}  # module path -> first fx node calling it
        self.param_owners: dict[int, str] = {}  # id(parameter) -> first qualified name seen
        self.params: dict[str, tuple[str, tuple[int, ...]]] = {}  # get_attr target -> (IR node, its IR shape)
        self.input_name: str | None = None
        self.param_views: dict[fx.Node, fx.Node] = {}  # a reshape of a parameter -> the parameter's get_attr
        self.pending: dict[fx.Node, tuple[fx.Node, tuple[int, ...]]] = {}  # a batch-moving permute -> (input, dims)
        self.scope_of: dict[str, str] = {}  # IR node name -> the scope its followers at the root join
        self.constants: dict[fx.Node, str] = {}  # a constant fx value -> the ``constant`` node folding it
        self.reshaped: dict[tuple[str, tuple[int, ...]], str] = {}  # (IR node, shape) -> its reshape
        self.single_sample: set[fx.Node] = set()  # computed without the input, held batched (import_shifted)
        self.shifted_used = False  # whether any value was held shifted: the import is then checked at batch 2
        self._consumer = (False, False)  # the node being mapped: (its output is shifted, it broadcasts)
        self.functionalised: set[fx.Node] = set()  # in-place ops expressed functionally (_functionalise)
        self.zeroed: dict[fx.Node, torch.Tensor] = {}  # a clone -> the 0/1 mask its in-place zero_() calls leave

    # -- the walk -------------------------------------------------------------
    def run(self, name: str, cls: str) -> Graph:
        nodes = list(self.fx_graph.nodes)
        output = next(n for n in nodes if n.op == "output")
        live = self._live(output)
        self._functionalise(nodes, live)
        self._check_inplace(nodes, live)
        inputs = [n for n in nodes if n.op == "placeholder" and n in live]
        if len(inputs) != 1:
            found = ", ".join(n.name for n in inputs) or "none"
            self.problems.append((output.name, "inputs", "", f"the output depends on {len(inputs)} inputs ({found}); "
                                                         "from_torch imports single-input models"))
        packer = _namedtuple_packer(output)
        for n in nodes:
            if n is packer or n not in live or n.op in ("output", "get_attr"):
                continue  # get_attr: a weight read by its layer's rule, or a parameter made a node where it is used
            if n.op == "placeholder":
                self.input_name = n.name
                self._add(IRNode(n.name, "input", (), {"shape": self.input_shape}), n, self.input_shape)
                self.scope_of[n.name] = ""
            else:
                self._map(n)
        outputs = self._outputs(output)
        if self.problems:
            raise self._error(cls)
        graph = Graph(name, meta={"source": f"torch:{cls}"})
        used = self._reaching(outputs.values())  # the unused parts of a split or unbind are left out
        for ir in self.ir_nodes:
            if ir.name in used:
                graph.add_node(ir.name, ir.op, ir.inputs, **ir.attrs)
        for key, ir_name in outputs.items():
            graph.set_output(ir_name, key)
        return graph

    def _error(self, cls: str) -> ImportTorchError:
        """All problems in one bounded error (see :func:`import_error`)."""
        return import_error(cls, self.problems, {n.name: n for n in self.fx_graph.nodes})

    def _reaching(self, outputs) -> set[str]:
        """The IR nodes some output depends on (the graph input always)."""
        inputs = {ir.name: ir.inputs for ir in self.ir_nodes}
        seen, todo = {self.input_name}, list(outputs)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(inputs.get(name, ()))
        return seen

    @staticmethod
    def _live(output: fx.Node) -> set[fx.Node]:
        live, todo = set(), [output]
        while todo:
            n = todo.pop()
            if n not in live:
                live.add(n)
                todo.extend(n.all_input_nodes)
        return live

    def _check_inplace(self, nodes: list[fx.Node], live: set[fx.Node]) -> None:
        """An in-place op changes what every later reader of its input's storage
        sees: the input itself and any view of it (``a = x[:, :4]`` before
        ``x.relu_()``). The IR is functional, so that cannot be expressed. Storage
        is compared on the traced values."""
        order = {n: i for i, n in enumerate(nodes)}
        storage = {n: v.untyped_storage().data_ptr() for n, v in self.values.items()
                   if isinstance(v, torch.Tensor) and v.numel()}
        sharing: dict[int, list[fx.Node]] = {}
        for w in nodes:
            if w in storage:
                sharing.setdefault(storage[w], []).append(w)
        for n in nodes:
            if n.op == "call_module":
                inplace = getattr(self.modules.get(n.target), "inplace", False) is True
            elif n.op == "call_method":
                inplace = n.target.endswith("_") and not n.target.endswith("__")
            elif n.op == "call_function":
                fn = getattr(n.target, "__name__", "")
                inplace = _inplace_arg(n) or fn.endswith("_") or fn in ("iadd", "imul", "isub", "itruediv", "setitem")
            else:
                inplace = False
            x = n.args[0] if n.args else None
            # a dead in-place op counts too (its writes are seen through x); constants were written
            # while traced, and Swin v2's zeroed bias slice becomes a product (_functionalise)
            if not inplace or not isinstance(x, fx.Node) or not depends(x) or n in self.functionalised:
                continue
            shared = [w for w in sharing.get(storage.get(x), ()) if order[w] < order[n]] or [x]
            later = sorted({u for w in shared for u in w.users if u in live and u is not n and order[u] > order[n]},
                           key=order.get)
            later = [u.name for u in later]
            if later:
                readers = ", ".join(map(repr, later[:3])) + (", ..." if len(later) > 3 else "")
                self._problem(n, f"overwrites '{x.name}' in place, which {readers} read(s) afterwards (directly or "
                                 "through a view); archlab graphs are functional, so use the returned value instead")

    def _problem(self, n: fx.Node, reason: str) -> None:
        module = self.modules.get(n.target) if n.op == "call_module" else None
        self.problems.append((n.name, short_target(n, module), f"{target_name(n, module)}: ", reason))

    def _map(self, n: fx.Node) -> None:
        module = self.modules.get(n.target) if n.op == "call_module" else None
        if not depends(n):  # a constant: folded into a ``constant`` node where a computed value reads it
            return
        try:
            source = self._param_source(n)
            if source is not None:  # a view of a parameter (gamma.reshape(1, -1, 1, 1)): the parameter, reshaped
                self.param_views[n] = source
                self.value[n] = n.name
                return
            special = self._computed(n)
            if special is not None:  # a zeroed clone, or F.linear with computed weights
                self.value[n] = special
                return
            site = Site(n, module, self.results, self.values, self.modules)
            pending = [i for i in n.all_input_nodes if i in self.pending]
            self._note_single_sample(n, module, site)
            folded = any(self._shifted(i) and "input" in depends(i) for i in n.all_input_nodes)
            shifted = self._shifted(n) or folded
            self.shifted_used |= shifted
            if pending:
                mapped = self._unpermute(site, pending[0])
                if self._shifted(self.pending[pending[0]][0]):
                    mapped, shifted = self._shift(mapped, n), True
            elif shifted:
                mapped = self._shifted_map(site)
            else:
                mapped = find_rule(n, module)(site)
            self._consumer = (shifted, mapped.op in BROADCASTING)
            if mapped.op == "permute" and mapped.attrs["dims"][0] != 0:  # moves the batch: wait for a consumer
                self.pending[n] = (mapped.inputs[0], tuple(mapped.attrs["dims"]))
                self.value[n] = n.name
                return
            if mapped.op == ALIAS:
                self.value[n] = self._alias(mapped)
            elif mapped.op == TUPLE:  # parts named after the call: chunk.0, chunk.1
                label = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "part")
                self.value[n] = tuple(None if part is None else self._emit(n, module, part, k, label)
                                      for k, part in enumerate(mapped.parts))
            else:
                self.value[n] = self._emit(n, module, mapped)
        except (Unmapped, TypeError, ValueError, IndexError, KeyError) as e:  # the latter: arguments computed at run time
            self._problem(n, str(e) if isinstance(e, Unmapped) else f"cannot read its arguments ({_one_line(e)})")
            self.value[n] = n.name  # later nodes are judged on their own
            self.ir_shapes[n.name] = self._ir_shape(n)
            self.scope_of.setdefault(n.name, "")

    def _alias(self, mapped: Mapped) -> str | tuple:
        src = mapped.inputs[0]
        if "element" not in mapped.attrs:
            return self._ir_input(src, None)
        held = self.value.get(src)
        k = mapped.attrs["element"]
        if not isinstance(held, tuple) or not -len(held) <= k < len(held):
            raise Unmapped(f"takes element {k} of '{src.name}', which is not a tuple archlab computes")
        if held[k] is None:
            raise Unmapped(f"uses element {k} of '{src.name}', which archlab does not compute (attention weights)")
        return held[k]

    def _ir_shape(self, n: fx.Node) -> tuple[int, ...] | None:
        """An fx value's shape in archlab terms (batch dropped; a shifted value's whole
        shape, :mod:`archlab.torchio.import_shifted`), or None if it has none."""
        s = self.results.get(n)
        if isinstance(s, tuple) and s and self._shifted(n):
            return tuple(s)
        return tuple(s[1:]) if isinstance(s, tuple) and len(s) >= 2 and s[0] == BATCH else None

    def _ir_input(self, v: Any, rank: int | None) -> str:
        """The IR node holding fx value ``v``; a parameter read as a tensor becomes a
        ``parameter`` node, broadcast as a tensor of ``rank`` (batch included) sees it."""
        shifted, broadcasting = self._consumer
        if isinstance(v, fx.Node) and (self._is_constant(v) or ("input" not in depends(v) and (
                shifted or not (self._is_parameter(v) or v in self.param_views)))):
            return self._aligned(v, rank, shifted, broadcasting)
        if isinstance(v, fx.Node) and v.op == "get_attr":
            return self._parameter(v, rank, None)
        if v in self.param_views:
            return self._parameter(self.param_views[v], rank, self.results.get(v))
        if v in self.pending:
            dims = self.pending[v][1]
            raise Unmapped(f"uses '{v.name}', a permutation {dims} that moves the batch dim; archlab keeps it first")
        held = self.value.get(v) if isinstance(v, fx.Node) else None
        if held is None:
            raise Unmapped(f"uses {v!r} as a tensor, but it is a size or a constant")
        if isinstance(held, tuple):
            raise Unmapped(f"uses the tuple '{v.name}' as a tensor")
        return held

    def _name(self, n: fx.Node, op: str, inputs: tuple[str, ...], scoped: bool = True) -> str:
        """A parameterless node's name: its module scope and op (``layer1.0.add``);
        at the model's root, the scope of its first scoped input (``avgpool.flatten``);
        ``op`` itself when not ``scoped`` (a module's second call: ``cpe1.proj_1``)."""
        stack = n.meta.get("nn_module_stack") or {}
        scope = next(reversed(stack)) if stack else ""
        if not scoped:
            base = op
        elif n.op == "call_module":
            base = n.target
        else:
            if not scope:  # the first input with a scope (a root-level class token has none)
                scope = next((self.scope_of[i] for i in inputs if self.scope_of.get(i)), "")
            base = f"{scope}.{op}" if scope else op
        name, k = base, 0
        while name in self.ir_shapes:
            k += 1
            name = f"{base}_{k}"
        return name

    def _emit(self, n: fx.Node, module: torch.nn.Module | None, mapped: Mapped, part: int | None = None,
              label: str | None = None) -> str:
        out_rank = len(self.results[n]) if isinstance(self.results.get(n), tuple) else None
        inputs = tuple(self._ir_input(i, out_rank) for i in mapped.inputs)
        again = False  # a second call of a module: the node shares the first call's weights
        if mapped.owner is not None:
            owner = mapped.owner
            weights = self.modules.get(owner)
            again = self._own(owner, list(weights.named_parameters(recurse=False)) if weights is not None else [], n)
        elif module is not None and next(itertools.chain(module.parameters(), module.buffers()), None) is not None:
            owner = n.target
            again = self._own(owner, list(module.named_parameters()), n)
        else:
            owner = None
        if part is None:
            expected = self._ir_shape(n)
        else:
            value = self.values.get(n)
            element = value[part] if isinstance(value, (tuple, list)) else None
            if not isinstance(element, torch.Tensor) or not element.dim():
                expected = None
            elif self._consumer[0]:  # shifted: its whole shape
                expected = tuple(element.shape)
            else:
                expected = tuple(element.shape[1:]) if element.shape[:1] == (BATCH,) else None
        if expected is None:
            raise Unmapped(f"its result {fmt_shape(self.results.get(n))} has no batch dimension of its own")
        steps = [(mapped.op, inputs, mapped.attrs), *[(op, None, attrs) for op, attrs in mapped.then]]
        if again:
            if mapped.then or part is not None:
                raise Unmapped(f"calls module '{owner}' a second time as several archlab nodes; weights are shared "
                               "by one node per call")
            steps = [(mapped.op, inputs, {**mapped.attrs, SHARES: owner})]
            base = self._name(n, owner, inputs, scoped=False)
        elif owner is not None:
            base = owner
        elif part is not None:
            base = self._name(n, f"{label.split('.')[-1]}.{part}", inputs)
        else:
            base = self._name(n, mapped.op, inputs)
        built: list[tuple[IRNode, tuple[int, ...] | None]] = []
        for k, (op, ins, attrs) in enumerate(steps):
            last = k == len(steps) - 1
            ir_name = base if last else f"{base}.{op}" + (f"_{k}" if k else "")
            if ir_name in self.ir_shapes:
                raise Unmapped(f"its archlab name '{ir_name}' is already taken by another node")
            if ins is None:  # a chained step reads the previous one
                ins, shapes = (built[-1][0].name,), [built[-1][1]]
            else:
                shapes = [self.ir_shapes[i] for i in ins]
            try:
                ir = IRNode(ir_name, op, ins, get_op(op).canonical_attrs(ir_name, attrs))
            except ArchlabError as e:
                raise Unmapped(str(e)) from None
            built.append((ir, self._infer(ir, shapes, expected if last else None)))
        scope = owner if owner is not None else (n.target if n.op == "call_module" else base.rpartition(".")[0])
        for ir, shape in built:
            self._add(ir, None, shape)
            self.scope_of[ir.name] = scope
        return built[-1][0].name

    @staticmethod
    def _infer(ir: IRNode, shapes: list, expected: tuple[int, ...] | None) -> tuple[int, ...] | None:
        """archlab's shape for ``ir``; it must agree with the traced one."""
        if any(s is None for s in shapes):
            return expected  # an input was already reported; judge this node on its own
        try:
            got = tuple(get_op(ir.op).infer_shape(ir, shapes))
        except ArchlabError as e:
            raise Unmapped(f"archlab's {ir.op} rejects it: {e}") from None
        if expected is not None and got != expected:
            raise Unmapped(f"archlab's {ir.op} would give {fmt_shape(got)} where torch gives {fmt_shape(expected)}")
        return got

    def _add(self, ir: IRNode, n: fx.Node | None, shape: tuple[int, ...] | None) -> None:
        self.ir_nodes.append(ir)
        self.ir_shapes[ir.name] = shape
        if n is not None:
            self.value[n] = ir.name

    def _outputs(self, output: fx.Node) -> dict[str, str]:
        ret = output.args[0]
        packer = _namedtuple_packer(output)
        if packer is not None:  # GoogLeNetOutputs(logits, aux2, aux1): its fields name the outputs
            fields = packer.target._fields
            named = {**dict(zip(fields, packer.args)), **packer.kwargs}
        elif isinstance(ret, fx.Node):
            named = {"out": ret}
        elif isinstance(ret, dict):
            named = {str(k): v for k, v in ret.items()}
        elif isinstance(ret, tuple) and hasattr(ret, "_fields"):  # a named tuple: its fields name the outputs
            named = dict(zip(ret._fields, ret))
        else:
            why = f"forward returns a {type(ret).__name__}; archlab graphs return a tensor or a dict: return a dict"
            self.problems.append((output.name, "output", "", why))
            return {}
        out = {}
        for key, v in named.items():
            held = self.value.get(v) if isinstance(v, fx.Node) else None
            if isinstance(held, str) and held in self.ir_shapes:
                out[key] = held
            elif isinstance(v, fx.Node) and (v in self.pending or v in self.param_views):
                why = f"output '{key}' is a parameter or a permutation that moves the batch dim, not an activation"
                self.problems.append((output.name, "output", "", why))
            else:
                why = f"output '{key}' is {v!r}, not a tensor computed from the input"
                self.problems.append((output.name, "output", "", why))
        return out
