"""Import a PyTorch model into the archlab IR: the inverse of :func:`to_module`.

:func:`from_torch` traces the model with ``torch.fx``, runs it once on zeros to
learn every value's shape, then maps each fx node through a table of rules
(:mod:`archlab.torchio.import_rules`) to archlab nodes. Nodes that cannot be
mapped are collected and reported together in one :class:`ImportTorchError`;
nothing is dropped silently.

A layer with parameters or buffers is named by its module path
(``layer1.0.conv1``), so ``to_module(graph, state_dict=model.state_dict())``
loads the original weights; every other node keeps its fx name (``add``,
``relu_1``).
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.fx as fx

from archlab.errors import ArchlabError, ImportTorchError, fmt_shape
from archlab.graph import Graph
from archlab.graph.node import Node as IRNode
from archlab.ops import get_op
from archlab.torchio.import_errors import import_error
from archlab.torchio.import_rules import (
    ALIAS, SCALAR, Mapped, Site, Unmapped, find_rule, is_shape_arithmetic, short_target, target_name,
)



def from_torch(module: torch.nn.Module, input_shape: tuple[int, ...], *, name: str | None = None) -> Graph:
    """Trace ``module`` with ``torch.fx`` and express it as an archlab graph.

    Python control flow on ``self.training`` is resolved at trace time with the
    module in its current mode: call ``model.eval()`` first for the inference
    graph (no auxiliary heads, stochastic depth as the identity). Shapes come
    from one eval-mode run on zeros; the module's (and its submodules')
    training flags are restored afterwards and its weights are not touched.
    ``x.view(x.size(0), -1)`` is recognised from the traced shapes, so it is
    imported as ``flatten`` whatever batch size the model later sees.

    Args:
        module: any fx-traceable module, or an existing ``torch.fx.GraphModule``
            (not retraced, e.g. from ``torchvision``'s ``create_feature_extractor``).
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
        ImportTorchError: fx cannot trace the model, it fails on the given input
            shape, or some nodes cannot be expressed (each one named, with its
            fx kind and target, e.g. ``call_module torch.nn.modules.conv.Conv3d``).
    """
    cls = type(module).__qualname__
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ImportTorchError(f"from_torch({cls}): input_shape must be a tuple of ints, got {input_shape!r}") from None
    gm = module if isinstance(module, fx.GraphModule) else _trace(module)
    shapes = _propagate(gm, module, shape)
    graph = _Importer(gm, shapes, shape).run(name or type(module).__name__, cls)
    try:
        return graph.validate()
    except ArchlabError as e:  # a mapping rule let through something archlab rejects
        raise ImportTorchError(f"cannot import {cls}: the imported graph does not validate: {e}") from None


def _one_line(e: BaseException) -> str:
    text = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _trace(module: torch.nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(module)
    except Exception as e:  # fx raises TraceError, TypeError, NotImplementedError, ...
        raise ImportTorchError(
            f"cannot import {type(module).__qualname__}: torch.fx cannot trace it ({_one_line(e)}); "
            "make forward traceable (no Python control flow on tensor values), or move the untraceable part into a "
            "leaf module"
        ) from None


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph and keeps each node's result shape (tensors) or type (anything else)."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.results: dict[fx.Node, Any] = {}
        self.at: fx.Node | None = None

    def run_node(self, n: fx.Node) -> Any:
        self.at = n
        out = super().run_node(n)
        self.results[n] = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)
        return out


def _propagate(gm: fx.GraphModule, module: torch.nn.Module, input_shape: tuple[int, ...]) -> dict[fx.Node, Any]:
    """Shape of every node's result on a batch of one zero input, in eval mode."""
    first = next((p for p in module.parameters() if p.is_floating_point()), None)
    dtype, device = (first.dtype, first.device) if first is not None else (torch.float32, torch.device("cpu"))
    flags = {m: m.training for m in (*module.modules(), *gm.modules())}
    required = [n.name for n in gm.graph.nodes if n.op == "placeholder" and not n.args]  # args holds a default
    if len(required) != 1:
        raise ImportTorchError(f"cannot import {type(module).__qualname__}: forward takes {len(required)} tensor "
                               f"inputs ({', '.join(required)}); from_torch imports single-input models")
    recorder = _ShapeRecorder(gm)
    try:
        gm.eval()
        with torch.no_grad():
            recorder.run(torch.zeros((1, *input_shape), dtype=dtype, device=device))
    except Exception as e:
        at = f" at node '{recorder.at.name}'" if recorder.at is not None else ""
        raise ImportTorchError(
            f"cannot import {type(module).__qualname__}: running it on a {fmt_shape((1, *input_shape))} input failed"
            f"{at} ({_one_line(e)}); check input_shape (batch excluded)"
        ) from None
    finally:
        for m, flag in flags.items():
            m.training = flag
    return recorder.results


def _inplace_arg(node: fx.Node) -> bool:
    """Whether a function call passes ``inplace=True`` (by keyword or position)."""
    if "inplace" in node.kwargs:
        return node.kwargs["inplace"] is True
    try:
        params = list(inspect.signature(node.target).parameters)
    except (TypeError, ValueError):
        return False
    i = params.index("inplace") if "inplace" in params else len(node.args)
    return i < len(node.args) and node.args[i] is True


def _namedtuple_packer(output: fx.Node) -> fx.Node | None:
    """The node building a named tuple that ``forward`` returns (fx records the
    constructor call), or None."""
    ret = output.args[0]
    if isinstance(ret, fx.Node) and ret.op == "call_function" and isinstance(ret.target, type) \
            and issubclass(ret.target, tuple) and hasattr(ret.target, "_fields") and len(ret.users) == 1:
        return ret
    return None


class _Importer:
    """One import: walks the fx graph once, collecting archlab nodes and problems."""

    def __init__(self, gm: fx.GraphModule, results: dict[fx.Node, Any], input_shape: tuple[int, ...]):
        self.gm = gm
        self.results = results
        self.input_shape = input_shape
        self.modules = dict(gm.named_modules())
        self.value: dict[fx.Node, str] = {}  # fx node -> archlab node name (or SCALAR)
        self.ir_shapes: dict[str, tuple[int, ...] | None] = {}
        self.ir_nodes: list[IRNode] = []
        self.problems: list[tuple[str, str, str, str]] = []  # (fx node, short target, "kind target: " or "", reason)
        self.stateful_calls: dict[str, str] = {}  # module path -> first fx node calling it
        self.param_owners: dict[int, str] = {}  # id(parameter) -> first qualified name seen

    # -- the walk -------------------------------------------------------------
    def run(self, name: str, cls: str) -> Graph:
        nodes = list(self.gm.graph.nodes)
        output = next(n for n in nodes if n.op == "output")
        live = self._live(output)
        self._check_inplace(nodes, live)
        inputs = [n for n in nodes if n.op == "placeholder" and n in live]
        if len(inputs) != 1:
            found = ", ".join(n.name for n in inputs) or "none"
            self.problems.append((output.name, "inputs", "", f"the output depends on {len(inputs)} inputs ({found}); "
                                                         "from_torch imports single-input models"))
        packer = _namedtuple_packer(output)
        for n in nodes:
            if n is packer:
                continue  # the output structure, read by _outputs
            if n in live and n.op not in ("placeholder", "output"):
                self._map(n)
            elif n in live and n.op == "placeholder":
                self._add(IRNode(n.name, "input", (), {"shape": self.input_shape}), n, self.input_shape)
        outputs = self._outputs(output)
        if self.problems:
            raise self._error(cls)
        graph = Graph(name, meta={"source": f"torch:{cls}"})
        for ir in self.ir_nodes:
            graph.add_node(ir.name, ir.op, ir.inputs, **ir.attrs)
        for key, ir_name in outputs.items():
            graph.set_output(ir_name, key)
        return graph

    def _error(self, cls: str) -> ImportTorchError:
        """All problems in one bounded error (see :func:`import_error`)."""
        return import_error(cls, self.problems, {n.name: n for n in self.gm.graph.nodes})

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
        """An in-place op whose input is read again afterwards changes what that
        reader sees; the IR is functional, so that cannot be expressed."""
        order = {n: i for i, n in enumerate(nodes)}
        for n in nodes:
            if n.op == "call_module":
                inplace = getattr(self.modules.get(n.target), "inplace", False) is True
            elif n.op == "call_method":
                inplace = n.target.endswith("_") and not n.target.endswith("__")
            elif n.op == "call_function":
                fn = getattr(n.target, "__name__", "")
                inplace = _inplace_arg(n) or fn.endswith("_") or fn in ("iadd", "imul", "setitem")
            else:
                inplace = False
            x = n.args[0] if n.args else None
            if not inplace or not isinstance(x, fx.Node):
                continue
            later = [u.name for u in x.users if u is not n and u in live and order[u] > order[n]]
            if later:
                readers = ", ".join(map(repr, later))
                self._problem(n, f"overwrites '{x.name}' in place, which {readers} read(s) afterwards; archlab graphs "
                                 "are functional, so use the returned value instead")

    def _problem(self, n: fx.Node, reason: str) -> None:
        module = self.modules.get(n.target) if n.op == "call_module" else None
        self.problems.append((n.name, short_target(n, module), f"{target_name(n, module)}: ", reason))

    def _map(self, n: fx.Node) -> None:
        result = self.results.get(n)
        module = self.modules.get(n.target) if n.op == "call_module" else None
        if not isinstance(result, tuple) and is_shape_arithmetic(n, result):
            self.value[n] = SCALAR
            return
        try:
            rule = find_rule(n, module)
            mapped = rule(Site(n, module, self.results))
            if mapped.op == ALIAS:
                self.value[n] = self._ir_input(mapped.inputs[0])
            else:
                self._emit(n, module, mapped)
        except (Unmapped, TypeError, ValueError, IndexError) as e:  # the latter: arguments computed at run time
            self._problem(n, str(e) if isinstance(e, Unmapped) else f"cannot read its arguments ({_one_line(e)})")
            self.value[n] = n.name  # later nodes are judged on their own
            self.ir_shapes[n.name] = self._ir_shape(n)

    def _ir_shape(self, n: fx.Node) -> tuple[int, ...] | None:
        """An fx value's shape in archlab terms (batch dropped), or None if it has none."""
        s = self.results.get(n)
        return tuple(s[1:]) if isinstance(s, tuple) and len(s) >= 2 and s[0] == 1 else None

    def _ir_input(self, v: Any) -> str:
        if not isinstance(v, fx.Node) or self.value.get(v, SCALAR) == SCALAR:
            raise Unmapped(f"uses {v!r} as a tensor, but it is a size or a constant")
        return self.value[v]

    def _emit(self, n: fx.Node, module: torch.nn.Module | None, mapped: Mapped) -> None:
        stateful = module is not None and any(True for _ in (*module.parameters(), *module.buffers()))
        if stateful:
            first = self.stateful_calls.setdefault(n.target, n.name)
            if first != n.name:
                raise Unmapped(f"calls module '{n.target}' a second time (first at fx node '{first}'): weight sharing "
                               "cannot be expressed (every archlab node owns its weights)")
            for pname, p in module.named_parameters():
                owner = self.param_owners.setdefault(id(p), f"{n.target}.{pname}")
                if owner != f"{n.target}.{pname}":
                    raise Unmapped(f"its parameter '{pname}' is the same tensor as '{owner}': tied weights cannot be "
                                   "expressed (every archlab node owns its weights)")
        base = n.target if stateful else n.name
        expected = self._ir_shape(n)
        if expected is None:
            raise Unmapped(f"its result {fmt_shape(self.results.get(n))} has no batch dimension of its own")
        steps = [(mapped.op, tuple(self._ir_input(i) for i in mapped.inputs), mapped.attrs),
                 *[(op, None, attrs) for op, attrs in mapped.then]]
        built: list[tuple[IRNode, tuple[int, ...] | None]] = []
        for k, (op, inputs, attrs) in enumerate(steps):
            last = k == len(steps) - 1
            ir_name = base if last else f"{base}.{op}"
            if ir_name in self.ir_shapes:
                raise Unmapped(f"its archlab name '{ir_name}' is already taken by another node")
            if inputs is None:  # a chained step reads the previous one
                inputs, shapes = (built[-1][0].name,), [built[-1][1]]
            else:
                shapes = [self.ir_shapes[i] for i in inputs]
            try:
                ir = IRNode(ir_name, op, inputs, get_op(op).canonical_attrs(ir_name, attrs))
            except ArchlabError as e:
                raise Unmapped(str(e)) from None
            built.append((ir, self._infer(ir, shapes, expected if last else None)))
        for ir, shape in built:
            self._add(ir, None, shape)
        self.value[n] = built[-1][0].name

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
            if isinstance(v, fx.Node) and self.value.get(v, SCALAR) != SCALAR:
                out[key] = self.value[v]
            else:
                why = f"output '{key}' is {v!r}, not a tensor computed from the input"
                self.problems.append((output.name, "output", "", why))
        return out
