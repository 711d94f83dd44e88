"""The archlab graph: a DAG of :class:`Node` stored on a networkx ``MultiDiGraph``."""
from __future__ import annotations

from typing import Any, Iterator

from archlab.errors import ArityError, DuplicateNameError, GraphError, UnknownNodeError, short, short_list
from archlab.graph.node import Node
from archlab.ops import Shape, get_op
from archlab.ops.base import SHARES


class Graph:
    """A network as a DAG of named nodes.

    The node order is the order of creation; builders and description files list
    nodes so that it is a topological order, and passes walk :meth:`topo_order`
    (equal to it for a valid graph). ``nx`` is the networkx view: one node per
    archlab node (attribute ``node``) and one edge per input slot (attribute
    ``slot``), so parallel edges are allowed (``mul(x, x)``).

    ``outputs`` maps output names (``out``, ``aux``) to node names; a compiled
    module returns a tensor for one output and a dict for several.
    """

    def __init__(self, name: str = "graph", *, meta: dict[str, Any] | None = None):
        self.name = name
        self.meta: dict[str, Any] = dict(meta or {})
        self.outputs: dict[str, str] = {}
        self._nodes: dict[str, Node] = {}
        self._version = 0  # bumped by every structural change; keys the caches below
        self._cache: dict[str, Any] = {}

    # -- construction ---------------------------------------------------------
    def add_node(self, name: str, op: str, inputs: tuple[str, ...] | list[str] = (), **attrs: Any) -> Node:
        """Create a node; canonicalises ``attrs`` through the op definition.

        Inputs may name nodes added later (a description file may be out of
        order); :meth:`validate` reports those that never appear.

        Raises:
            DuplicateNameError, UnknownOpError, ArityError, AttrError.
        """
        return self._add(name, op, tuple(inputs), attrs)

    def _add(self, name: str, op: str, inputs: tuple[str, ...], attrs: dict[str, Any], definition=None) -> Node:
        """:meth:`add_node` with the attributes as a dict (the builder's entry, which
        has looked up the op's ``definition`` already)."""
        if not isinstance(name, str) or not name:
            raise GraphError(f"node name must be a non-empty string, got {short(name)}")
        if name in self._nodes:
            raise DuplicateNameError(f"{op} '{name}': a node named '{name}' already exists ({self._nodes[name].op})")
        if definition is None:
            definition = get_op(op, node=name)
        lo, hi = definition.arity
        if len(inputs) < lo or (hi is not None and len(inputs) > hi):
            want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi is not None else f"at least {lo}"
            raise ArityError(f"{op} '{name}': takes {want} input(s), got {len(inputs)} ({short_list(inputs) or 'none'})")
        node = Node(name, op, inputs, definition.canonical_attrs(name, attrs))
        self._nodes[name] = node
        self._changed()
        return node

    def remove_node(self, name: str) -> None:
        """Remove a node that nothing consumes yet (e.g. one the builder rejected)."""
        if self.users(name):
            raise GraphError(f"cannot remove '{name}': used by {short_list(self.users(name))}")
        del self._nodes[name]
        self.outputs = {k: v for k, v in self.outputs.items() if v != name}
        self._changed()

    def _changed(self) -> None:
        """Forget everything derived from the structure (call after editing a
        node's attributes in place)."""
        self._version += 1
        self._cache.clear()

    def cached(self, key: str, compute):
        """``compute()`` once per graph version: passes cache derived tables here."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    @property
    def nx(self):
        """The networkx view (a ``MultiDiGraph``; node attribute ``node``, edge
        attribute ``slot``), built on first use and cached until the graph changes."""
        import networkx as nx

        def build():
            g = nx.MultiDiGraph()
            for name, node in self._nodes.items():
                g.add_node(name, node=node)
            for name, node in self._nodes.items():
                for slot, src in enumerate(node.inputs):
                    g.add_edge(src, name, slot=slot)
            return g

        return self.cached("nx", build)

    def set_output(self, node: str, name: str = "out") -> None:
        """Mark ``node`` as the graph output called ``name``."""
        if node not in self._nodes:
            raise UnknownNodeError(f"output '{name}' refers to unknown node '{node}'")
        self.outputs[name] = node
        self._cache.pop("valid", None)  # outputs decide which nodes dangle

    # -- access ---------------------------------------------------------------
    @property
    def nodes(self) -> list[Node]:
        """All nodes in creation order."""
        return list(self._nodes.values())

    def __iter__(self) -> Iterator[Node]:
        return iter(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, name: str) -> bool:
        return name in self._nodes

    def __getitem__(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise UnknownNodeError(f"no node named '{name}' in graph {self.name}") from None

    @property
    def input_nodes(self) -> list[Node]:
        return [n for n in self._nodes.values() if n.op == "input"]

    def users(self, name: str) -> list[str]:
        """Names of the nodes that consume ``name`` (once each), in creation order."""
        users = self._cache.get("users")
        if users is None:
            users = {n: [] for n in self._nodes}
            for node in self._nodes.values():
                for i in dict.fromkeys(node.inputs):
                    users.setdefault(i, []).append(node.name)
            self._cache["users"] = users
        return list(users.get(name, ()))

    def topo_order(self) -> list[Node]:
        """Nodes in a topological order that follows creation order where it can
        (cached until the graph changes).

        Raises:
            CycleError: naming the nodes on a cycle.
        """
        order = self._cache.get("topo")
        if order is None:
            order = self._cache["topo"] = self._topo_sort()
        return list(order)

    def _topo_sort(self) -> list[Node]:
        import heapq

        index = {name: i for i, name in enumerate(self._nodes)}
        # Fast path: creation order is already topological (builders, files in order).
        if all(index.get(i, len(index)) < index[n.name] for n in self._nodes.values() for i in n.inputs):
            return list(self._nodes.values())
        indegree = {n: sum(1 for i in node.inputs if i in index) for n, node in self._nodes.items()}
        heap = [index[n] for n, d in indegree.items() if d == 0]
        heapq.heapify(heap)
        names = list(self._nodes)
        order = []
        while heap:
            name = names[heapq.heappop(heap)]
            order.append(self._nodes[name])
            for u in self.users(name):
                indegree[u] -= sum(1 for i in self._nodes[u].inputs if i == name)
                if indegree[u] == 0:
                    heapq.heappush(heap, index[u])
        if len(order) != len(self._nodes):
            from archlab.graph.validate import raise_cycle

            raise_cycle(self)
        return order

    # -- passes -----------------------------------------------------------------
    def infer_shapes(self) -> Graph:
        """Run shape inference (writes ``node.meta['shape']``); returns self."""
        from archlab.graph.shapes import infer_shapes

        infer_shapes(self)
        return self

    def validate(self) -> Graph:
        """Check the whole graph (see :func:`archlab.graph.validate.validate`);
        a no-op when it is unchanged since it last passed."""
        from archlab.graph.validate import validate

        if not self._cache.get("valid"):
            validate(self)
            self._cache["valid"] = True
        return self

    def shape(self, name: str) -> Shape:
        node = self[name]
        if node.shape is None:
            self.infer_shapes()
        return node.shape

    def num_params(self) -> int:
        """Trainable parameter elements (runs shape inference if needed)."""
        return sum(self._per_node("params"))

    def num_buffers(self) -> int:
        return sum(self._per_node("buffers"))

    def _per_node(self, rule: str) -> list[int]:
        if any(n.shape is None for n in self._nodes.values()):
            self.infer_shapes()
        out = []
        for n in self._nodes.values():
            if SHARES in n.attrs:  # another node's weights: counted there
                out.append(0)
                continue
            shapes = [self._nodes[i].shape for i in n.inputs]
            out.append(getattr(get_op(n.op), rule)(n, shapes))
        return out

    # -- comparison and display -------------------------------------------------
    def signature(self) -> tuple:
        """Everything that defines the graph (names, ops, attributes, order,
        outputs, meta), as a comparable value."""
        return (
            self.name,
            tuple(n.signature() for n in self._nodes.values()),
            tuple(self.outputs.items()),
            tuple(sorted((k, repr(v)) for k, v in self.meta.items())),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Graph) and self.signature() == other.signature()

    __hash__ = None  # mutable

    def copy(self) -> Graph:
        g = Graph(self.name, meta=self.meta)
        for n in self._nodes.values():
            g.add_node(n.name, n.op, n.inputs, **n.attrs)
        g.outputs = dict(self.outputs)
        return g

    def to_text(self, *, max_nodes: int | None = None) -> str:
        from archlab.graph.text import graph_text

        return graph_text(self, max_nodes=max_nodes)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return self.to_text(max_nodes=20)
