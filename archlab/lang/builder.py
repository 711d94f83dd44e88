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

from contextlib import contextmanager
from typing import Any, Iterator

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


class GraphBuilder:
    """Builds a :class:`~archlab.graph.Graph` one node at a time.

    Args:
        name: the graph's name (a zoo model's registry name).
        meta: free-form metadata kept with the graph (paper, variant).
    """

    def __init__(self, name: str = "net", *, meta: dict[str, Any] | None = None):
        self.graph = Graph(name, meta=meta)
        self._scopes: list[str] = []

    # -- scopes and names -------------------------------------------------------
    @contextmanager
    def scope(self, name: str | int) -> Iterator[None]:
        """Prefix the names of nodes created inside with ``name.``."""
        self._scopes.append(str(name))
        try:
            yield
        finally:
            self._scopes.pop()

    def _full_name(self, name: str | int | None, op: str) -> str:
        if name is not None:
            full = ".".join([*self._scopes, str(name)])
            if full in self.graph:
                raise DuplicateNameError(
                    f"{op} '{full}': name already used by {self.graph[full].op} '{full}'; "
                    "give the node another name or leave name=None for an automatic one"
                )
            return full
        base = ".".join([*self._scopes, op])
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
        definition = get_op(op)
        inputs: list[str] = []
        rest = list(args)
        if rest and isinstance(rest[0], (list, tuple)) and rest[0] and all(isinstance(r, Ref) for r in rest[0]):
            inputs = [r.name for r in rest.pop(0)]
        while rest and isinstance(rest[0], Ref):
            inputs.append(rest.pop(0).name)
        if any(isinstance(r, Ref) for r in rest):
            raise ArchlabError(f"{op}: node inputs must come before attribute values")
        if len(rest) > len(definition.attrs):
            raise AttrError(f"{op}: too many positional attributes {rest!r}; {op} takes {[a.name for a in definition.attrs]}")
        for attr, value in zip(definition.attrs, rest):
            if attr.name in attrs:
                raise AttrError(f"{op}: attribute {attr.name} given twice")
            attrs[attr.name] = value
        full = self._full_name(name, op)
        node = self.graph.add_node(full, op, inputs, **attrs)
        try:
            infer_node(self.graph, node)
        except ArchlabError:
            self.graph.remove_node(full)
            raise
        return Ref(self, full)

    def __getattr__(self, op: str):
        if op.startswith("_") or op not in all_ops():
            raise AttributeError(f"GraphBuilder has no attribute or op '{op}'")

        def make(*args: Any, name: str | int | None = None, **attrs: Any) -> Ref:
            return self.node(op, *args, name=name, **attrs)

        make.__name__ = op
        make.__doc__ = get_op(op).__doc__
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
        self.graph._cache["shapes"] = True  # every node was inferred when it was added
        return self.graph.validate()
