"""The Python side of the description language.

A block is an ordinary function of a :class:`GraphBuilder` and its input
:class:`Ref`; ``with b.scope("layer1"):`` nests names, so a ResNet reads like
the paper and node names match torchvision's module paths::

    def basic_block(b, x, planes, stride=1):
        out = b.relu(b.batch_norm2d(b.conv2d(x, planes, 3, stride=stride, padding=1, bias=False, name="conv1"), name="bn1"))
        ...

Every registered op is a method: ``b.<op>(*inputs, *attrs, name=None, **attrs)``.
Leading :class:`Ref` arguments (or one list of them) are the inputs; further
positional values fill the op's attributes in declaration order. Each node's
shape is inferred when it is added, so a mistake is reported at the line that
made it, naming the node.
"""
from __future__ import annotations

from typing import Any

from archlab.errors import ArchlabError, AttrError, DuplicateNameError
from archlab.graph import Graph
from archlab.graph.shapes import infer_node
from archlab.ops import Shape, all_ops, get_op


class Ref:
    """A handle on a node being built: its full name and shape."""

    __slots__ = ("builder", "name")

    def __init__(self, builder: GraphBuilder, name: str):
        self.builder = builder
        self.name = name

    @property
    def shape(self) -> Shape:
        return self.builder.graph[self.name].shape

    @property
    def channels(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        from archlab.graph.text import node_line

        return f"Ref({node_line(self.builder.graph[self.name])})"


class _Scope:
    """``with builder.scope(name):`` (a class, not a generator: zoo models open hundreds)."""

    __slots__ = ("builder", "name", "outer")

    def __init__(self, builder: GraphBuilder, name: str) -> None:
        self.builder, self.name, self.outer = builder, name, ""

    def __enter__(self) -> None:
        b = self.builder
        b._scopes.append(self.name)
        self.outer, b._prefix = b._prefix, f"{b._prefix}{self.name}."

    def __exit__(self, *exc: object) -> None:
        b = self.builder
        b._scopes.pop()
        b._prefix = self.outer


class GraphBuilder:
    """Builds a :class:`~archlab.graph.Graph` one node at a time.

    Args:
        name: the graph's name (a zoo model's registry name).
        meta: free-form metadata kept with the graph (paper, variant).
    """

    def __init__(self, name: str = "net", *, meta: dict[str, Any] | None = None):
        self.graph = Graph(name, meta=meta)
        self._scopes: list[str] = []
        self._prefix = ""  # "a.b." inside scope("a"), scope("b")

    # -- scopes and names -------------------------------------------------------
    def scope(self, name: str | int) -> _Scope:
        """Prefix the names of nodes created inside with ``name.`` (a context manager)."""
        return _Scope(self, str(name))

    def _full_name(self, name: str | int | None, op: str) -> str:
        if name is not None:
            full = f"{self._prefix}{name}"
            if full in self.graph:
                raise DuplicateNameError(
                    f"{op} '{full}': name already used by {self.graph[full].op} '{full}'; "
                    "give the node another name or leave name=None for an automatic one"
                )
            return full
        base = f"{self._prefix}{op}"
        full, k = base, 0
        while full in self.graph:
            k += 1
            full = f"{base}_{k}"
        return full

    # -- nodes --------------------------------------------------------------------
    def input(self, shape: tuple[int, ...] | list[int], name: str = "x") -> Ref:
        """Add a graph input of ``shape`` (batch excluded), e.g. ``(3, 224, 224)``."""
        return self.node("input", shape=list(shape), name=name)

    def node(self, op: str, *args: Any, name: str | int | None = None, **attrs: Any) -> Ref:
        """Add a node of ``op``; see the module docstring for the argument rules."""
        return self._node(op, args, name, attrs)

    def _node(self, op: str, args: tuple, name: str | int | None, attrs: dict[str, Any]) -> Ref:
        definition = get_op(op)
        inputs: list[str] = []
        k = 0
        for a in args:
            if not isinstance(a, Ref):
                break
            inputs.append(a.name)
            k += 1
        if k == 0 and args and isinstance(args[0], (list, tuple)) and args[0] \
                and all(isinstance(r, Ref) for r in args[0]):
            inputs = [r.name for r in args[0]]
            k = 1
        if k < len(args):
            rest = args[k:]
            if any(isinstance(r, Ref) for r in rest):
                raise ArchlabError(f"{op}: node inputs must come before attribute values")
            if len(rest) > len(definition.attrs):
                raise AttrError(f"{op}: too many positional attributes {list(rest)!r}; {op} takes {[a.name for a in definition.attrs]}")
            for attr, value in zip(definition.attrs, rest):
                if attr.name in attrs:
                    raise AttrError(f"{op}: attribute {attr.name} given twice")
                attrs[attr.name] = value
        full = self._full_name(name, op)
        node = self.graph._add(full, op, tuple(inputs), attrs, definition)
        try:
            infer_node(self.graph, node, definition)
        except ArchlabError:
            self.graph.remove_node(full)
            raise
        return Ref(self, full)

    def __getattr__(self, op: str):
        if op.startswith("_") or op not in all_ops():
            raise AttributeError(f"GraphBuilder has no attribute or op '{op}'")

        def make(*args: Any, name: str | int | None = None, **attrs: Any) -> Ref:
            return self._node(op, args, name, attrs)

        make.__name__ = op
        make.__doc__ = get_op(op).__doc__
        self.__dict__[op] = make  # found directly from now on
        return make

    # -- finishing ------------------------------------------------------------------
    def output(self, ref: Ref, name: str = "out") -> Ref:
        """Mark ``ref`` as the output ``name`` (several outputs give a dict)."""
        self.graph.set_output(ref.name, name)
        return ref

    def build(self) -> Graph:
        """Validate and return the graph. With no output marked, the last node is ``out``."""
        if not self.graph.outputs and len(self.graph):
            self.graph.set_output(self.graph.nodes[-1].name)
        g = self.graph
        # Every node was added after its inputs and inferred then: the creation
        # order is topological, inputs exist and shapes are known.
        g._cache.update(shapes=True, ordered=True, topo=list(g._nodes.values()))
        return g.validate()
