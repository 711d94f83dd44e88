"""Trace a PyTorch model the way it really runs on one example input.

:func:`concrete_trace` is ``torch.fx.symbolic_trace`` with real values riding
along: every traced node is also executed on the example input (eval mode, no
grad), so

* ``x.shape``, ``x.size(k)``, ``x.dim()`` and ``len(x)`` are plain Python ints:
  code that computes padding or window counts from the input size ("same"
  padding, window partitions) traces, specialised on the example input, as
  ``torch.export`` specialises it;
* iterating over a traced tuple (``a, b = x.chunk(2)``) works;
* every node's result shape is known without a second forward pass
  (:attr:`ConcreteTracer.values`).

An import needs the shapes of values computed from the input, not their
numbers: with ``shapes_only`` (what :func:`import_trace` uses) convolutions,
matrix products, pooling and attention on them are answered by torch's shape
functions (:mod:`archlab.torchio.trace_shapes`), so a trace costs a fraction of
a forward pass; values computed without the input stay exact.

Leaf modules run in eval mode whatever the model's mode (the caller restores
the flags): batch statistics of a 1-sample input are meaningless and would
update the running ones. Control flow on tensor *values* (``if x.sum() > 0``) is refused: specialising
it on one input would silently give another model. Modules are traced through
down to the leaves that ``is_leaf`` picks (the importer picks those it has a
rule for); ``torch.fx.wrap``-ped functions are traced through too (their
insides are plain tensor code), except those ``keep_wrapped`` keeps as one call.

Each node records what its value depends on (:mod:`archlab.torchio.trace_depends`):
the input, parameters, or neither. A value that depends on neither is a
constant (Swin's shift mask, built with ``x.new_zeros`` from sizes): item
assignment on it is recorded and run (on a computed tensor it is refused), and
the importer folds it into one ``constant`` node.
"""
from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx
from torch.fx.node import map_aggregate

from archlab.torchio.trace_depends import (  # noqa: F401  (FROM_BUFFERS, depends: re-exported)
    DEPENDS, FROM_BUFFERS, SHAPE_ONLY_FUNCTIONS, SHAPE_ONLY_METHODS, EagerParameterMarks, depends, proxies,
)
from archlab.torchio.trace_shapes import ShapesOnly


class TensorValueControlFlow(RuntimeError):
    """Python control flow on a tensor's value, which a trace cannot follow."""


class ItemAssignment(RuntimeError):
    """``x[i] = v`` on a traced tensor: an in-place write the functional IR cannot hold."""


_VALUE_READS = frozenset(("item", "tolist", "numpy", "__bool__", "__int__", "__float__"))
BATCH = 1
"""The example input's batch. One sample keeps the trace as fast as one forward
pass; since a batch of 1 cannot show an op that moves or merges the batch dim
(``x.unsqueeze(0)``, ``x[None]``, ``x.squeeze()``), the import rules refuse
those by their arguments."""


class NodeRunError(RuntimeError):
    """Running a traced node on the example input failed; ``node`` names it, ``__cause__`` says why."""

    def __init__(self, node: fx.Node, cause: BaseException):
        super().__init__(f"node '{node.name}' failed: {type(cause).__name__}: {cause}")
        self.node, self.cause = node, cause


class ValueProxy(fx.Proxy):
    """An fx proxy that also holds its value (``.value``) on the example input."""

    value: Any = None

    def size(self, dim: int | None = None):
        return self.value.size() if dim is None else self.value.size(dim)

    def dim(self) -> int:
        return self.value.dim()

    def numel(self) -> int:
        return self.value.numel()

    @property
    def shape(self):
        return self.value.shape

    @property
    def ndim(self) -> int:
        return self.value.dim()

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def device(self):
        return self.value.device

    @property
    def is_cuda(self) -> bool:
        return self.value.is_cuda

    def __len__(self) -> int:
        return len(self.value)

    def __iter__(self):
        return iter([self[i] for i in range(len(self.value))])

    def __bool__(self) -> bool:
        if isinstance(self.value, (tuple, list)):  # emptiness of a traced tuple is a matter of sizes
            return bool(self.value)
        raise TensorValueControlFlow(f"'{self.node.name}': Python control flow on a tensor's value (if/while/assert)")

    def __setitem__(self, index, value):
        """``x[i] = v`` is recorded (and run) only on a constant: a tensor that depends on
        neither the input nor a parameter (Swin's shift mask, built from sizes)."""
        tracer = self.tracer
        parts = [self, index, value]
        deps = frozenset().union(*(depends(a.node) for a in proxies(parts)))
        if deps:
            raise ItemAssignment(f"'{self.node.name}': item assignment (x[...] = v) writes a tensor computed from the "
                                 f"{' and '.join(sorted(deps))} in place")
        target = tracer.values.get(self.node)
        if isinstance(target, torch.Tensor) and target.numel() and \
                target.untyped_storage().data_ptr() in tracer.constants_read:
            raise ItemAssignment(f"'{self.node.name}': item assignment (x[...] = v) writes a constant after a "
                                 "computed value has read it")
        tracer.create_proxy("call_function", operator.setitem, (self, index, value), {})

    def _number(self):
        raise TensorValueControlFlow(f"'{self.node.name}': a tensor's value used as a Python number")

    __index__ = __int__ = __float__ = _number


class ConcreteTracer(fx.Tracer):
    """An fx tracer that executes what it records (see the module docstring).

    Args:
        example: the example input (a tensor with its batch dimension).
        is_leaf: ``(module, qualified_name) -> bool``: modules not traced through.
        keep_wrapped: ``qualified name -> bool``: functions registered with
            ``torch.fx.wrap`` recorded as one call (the others are traced through).
        shapes_only: values computed from the input keep their shapes and dtypes
            but not their numbers (convolutions, matrix products, pooling,
            attention and more on them are not computed; see
            :class:`~archlab.torchio.trace_shapes.ShapesOnly`), so a trace costs a
            fraction of a forward pass. Values that do not depend on the input are
            exact either way.
    """

    def __init__(self, example: torch.Tensor, is_leaf: Callable[[torch.nn.Module, str], bool],
                 keep_wrapped: Callable[[str], bool] = lambda name: False, *, shapes_only: bool = False):
        super().__init__()
        self._shapes_only = ShapesOnly() if shapes_only else None
        self.example = example
        self._is_leaf = is_leaf
        self.keep_wrapped = keep_wrapped
        self.values: dict[fx.Node, Any] = {}
        self._placeholders = 0
        self._executing = False
        self.constants_read: set[int] = set()  # storage of constants that a computed value has read

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        return self._is_leaf(m, module_qualified_name)

    # While a value is computed, the tracer's patches of nn.Module.__call__ and
    # __getattr__ step aside: a leaf's insides run as plain torch code.
    def call_module(self, m, forward, args, kwargs):
        if self._executing:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self._executing or not isinstance(attr_val, torch.Tensor):  # fx proxies tensors only
            return attr_val
        if isinstance(attr_val, torch.nn.Parameter):  # fx scans every parameter per read: look the name up
            name = self._param_names.get(id(attr_val))
            if name is not None:
                if name not in parameter_proxy_cache:
                    parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {})
                return parameter_proxy_cache[name]
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def proxy(self, node: fx.Node) -> ValueProxy:
        return ValueProxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        if kind != "output":
            deps = self._depends(kind, target, args, kwargs)
            try:
                value = self._run(kind, target, args, kwargs, from_input="input" in deps)
            except (TensorValueControlFlow, NodeRunError, ItemAssignment):
                raise
            except Exception as e:
                raise NodeRunError(proxy.node, e) from e
            self.values[proxy.node] = value
            if isinstance(proxy, ValueProxy):
                proxy.value = value
            if kind == "get_attr" and isinstance(value, torch.nn.Parameter):
                deps = frozenset(("parameter",))
            proxy.node.meta[DEPENDS] = deps
        return proxy

    def _has_parameters(self, target: str) -> bool:
        if target in self._modules_by_name:
            return target in self._with_parameters
        return any(p is not None for m in self.root.get_submodule(target).modules()  # a second name, or added
                   for p in m._parameters.values())

    def _depends(self, kind: str, target: Any, args: tuple, kwargs: dict) -> frozenset:
        """What the value will depend on (:data:`DEPENDS`), known before it is computed:
        ``x.new_zeros(...)`` reads only ``x``'s dtype; a module with parameters adds
        ``"parameter"``; a parameter read by ``get_attr`` is marked by the caller."""
        if kind == "placeholder":
            return frozenset(("input",))
        if kind == "get_attr":
            return frozenset()
        read = (args[1:], kwargs) if (kind == "call_method" and target in SHAPE_ONLY_METHODS) or \
            (kind == "call_function" and target in SHAPE_ONLY_FUNCTIONS) else (args, kwargs)
        inputs = [p.node for p in proxies(read)]
        deps = frozenset().union(*(depends(i) for i in inputs))
        if kind == "call_module" and self._has_parameters(target):
            deps |= {"parameter"}
        if deps:
            for i in inputs:
                v = self.values.get(i)
                if not depends(i) and isinstance(v, torch.Tensor) and v.numel():
                    self.constants_read.add(v.untyped_storage().data_ptr())
        return deps

    def _run(self, kind: str, target: Any, args: tuple, kwargs: dict, from_input: bool = False) -> Any:
        def value(a: Any) -> Any:  # a ValueProxy, or an fx Attribute proxy (``x.T``) whose node holds it
            return self.values[a.node] if isinstance(a, fx.Proxy) else a

        vargs = map_aggregate(args, value)
        vkwargs = map_aggregate(kwargs, value)
        self._executing = True  # module calls and attribute reads inside are torch's own (see call_module)
        try:
            # the marks mode has nothing to mark in torch's own calls: skip its dispatch (~20 % of a trace)
            with torch.overrides._pop_mode_temporarily() if self._marks_active() else contextlib.nullcontext(), \
                    self._shapes_only if from_input and self._shapes_only else contextlib.nullcontext():
                return self._execute(kind, target, vargs, vkwargs)
        finally:
            self._executing = False

    def _marks_active(self) -> bool:
        from torch.overrides import _get_current_function_mode

        return _get_current_function_mode() is getattr(self, "_marks", None)

    def _execute(self, kind: str, target: Any, vargs: Any, vkwargs: Any) -> Any:
        if kind == "placeholder":
            self._placeholders += 1
            return self.example if self._placeholders == 1 else (vargs[0] if vargs else None)
        if kind == "get_attr":
            return self.fetch(target)
        if kind == "call_function":
            return target(*vargs, **vkwargs)
        if kind == "call_method":
            if target in _VALUE_READS:
                raise TensorValueControlFlow(f"'{target}()' reads a tensor's value into Python")
            return getattr(vargs[0], target)(*vargs[1:], **vkwargs)
        if kind == "call_module":
            module = self._modules_by_name.get(target)  # not `or`: an empty Sequential is falsy
            if module is None:  # a second name of a shared module
                module = self.root.get_submodule(target)
            if module.training:
                module.eval()  # a leaf runs as at inference (batch norm on running statistics, no dropout);
            return module(*vargs, **vkwargs)  # the caller restores every module's flag after the trace
        raise AssertionError(kind)

    def fetch(self, target: str) -> Any:
        obj = self.root
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    def value_of(self, node: fx.Node) -> Any:
        """The node's value; constants fx adds without a proxy (``_tensor_constant0``)
        are read from the root."""
        if node not in self.values and node.op == "get_attr":
            value = self.values[node] = self.fetch(node.target)
            if id(value) in self._marks.marked and value is self._marks.marked[id(value)]:
                node.meta[DEPENDS] = frozenset(("parameter",))  # computed from parameters outside the trace
            elif isinstance(value, torch.Tensor) and self._marks.buffer_names(value) and \
                    self._marks.buffers.get(id(value), (None, None))[1] is not value:  # not the buffer itself
                node.meta[FROM_BUFFERS] = self._marks.buffer_names(value)
        return self.values.get(node)

    def trace(self, root, concrete_args=None):
        self._param_names = {}
        self._modules_by_name: dict[str, torch.nn.Module] = {}
        self._with_parameters: set[str] = set()  # modules holding a parameter, themselves or below
        if isinstance(root, torch.nn.Module):
            for name, p in root.named_parameters():
                self._param_names.setdefault(id(p), name)
            self._modules_by_name = dict(root.named_modules())  # a module's first name (others: _has_parameters)
            for name, m in self._modules_by_name.items():
                if any(p is not None for p in m._parameters.values()):
                    parts = name.split(".") if name else []
                    self._with_parameters.update(".".join(parts[:k]) for k in range(len(parts) + 1))
        buffers = {}
        if isinstance(root, torch.nn.Module):
            for name, module in root.named_modules():
                for leaf, b in module._buffers.items():
                    if b is not None and leaf not in module._non_persistent_buffers_set:
                        buffers[id(b)] = (f"{name}.{leaf}" if name else leaf, b)
        self._marks = EagerParameterMarks(self, buffers)
        with self._wrapped_patching(), self._marks:
            return super().trace(root, concrete_args)

    @contextlib.contextmanager
    def _wrapped_patching(self):
        """Functions registered with ``torch.fx.wrap`` are traced through, instead of
        recorded as one opaque call, unless ``keep_wrapped`` keeps them."""
        from torch.fx import _symbolic_trace as st

        saved = dict(st._wrapped_fns_to_patch)
        for key, frame in saved.items():
            if not self.keep_wrapped(f"{frame.get('__name__', '?')}.{key[1]}"):
                del st._wrapped_fns_to_patch[key]
        try:
            yield
        finally:
            st._wrapped_fns_to_patch.clear()
            st._wrapped_fns_to_patch.update(saved)


def concrete_trace(module: torch.nn.Module, example: torch.Tensor,
                   is_leaf: Callable[[torch.nn.Module, str], bool], *,
                   keep_wrapped: Callable[[str], bool] = lambda name: False,
                   shapes_only: bool = False) -> tuple[fx.Graph, ConcreteTracer]:
    """Trace ``module`` (in its current mode; the caller sets eval and no_grad)
    on ``example``; returns the fx graph and the tracer holding each node's value
    (``fx.GraphModule(tracer.root, graph)`` makes it a module); ``shapes_only``:
    see :class:`ConcreteTracer`.
    ``forward``'s arguments after the first that have defaults (timm's
    ``attn_mask=None``) are specialised on those defaults."""
    import inspect

    tracer = ConcreteTracer(example, is_leaf, keep_wrapped, shapes_only=shapes_only)
    try:
        params = list(inspect.signature(module.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        params = []
    fixed = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    graph = tracer.trace(module, concrete_args=fixed or None)
    return graph, tracer
