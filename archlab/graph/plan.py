"""The execution plan: a graph lowered once to what every pass reads per node.

Each analyzer walks the nodes in execution order and, per node, needs the same
things: the op definition, the input shapes, the output shape and what the op
reads of each input. Looking them up node by node in every pass costs more than
the passes' own arithmetic, so :func:`plan` resolves them once per graph version
(cached on the graph, dropped by any structural change) and the passes iterate
over its :class:`Step` tuples.

Op rules (params, MACs, memory, receptive-field windows) are functions of a
node's op, attributes and shapes only, so nodes that agree on those (the 36
identical bottlenecks of a ResNet-152 stage) share one evaluation: each step
carries that :attr:`Step.sig` and :func:`per_sig` evaluates a rule once per sig.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple, TypeVar

from archlab.ops import get_op
from archlab.ops.base import Op

if TYPE_CHECKING:  # pragma: no cover
    from archlab.graph.graph import Graph
    from archlab.graph.node import Node
    from archlab.ops.base import Shape

T = TypeVar("T")


class Step(NamedTuple):
    """One node of the plan.

    Fields:
        node: the node (passes write their results to ``node.meta``).
        name: ``node.name``.
        op: the op definition (``get_op(node.op)``).
        inputs: ``node.inputs``.
        in_shapes: the inputs' shapes, in argument order.
        shape: the node's output shape.
        reads: ``op.reads(k)`` for each input ``k`` (``"value"``, ``"shape"`` or a
            side output's name).
        size: elements of the output per sample (the product of ``shape``).
        sig: numbers the distinct ``(op, attribute values, in_shapes, shape)`` of
            the plan: steps with equal sigs get equal rule results; ``None``
            when the op's rules read other nodes (``op.needs_graph``) or an
            attribute is unhashable.
    """

    node: Node
    name: str
    op: Op
    inputs: tuple[str, ...]
    in_shapes: tuple[Shape, ...]
    shape: Shape
    reads: tuple[str, ...]
    size: int
    sig: int | None


def plan(graph: Graph) -> Plan:
    """The graph's steps in :meth:`~archlab.graph.Graph.topo_order` (validates the
    graph first; cached until it changes: do not mutate the result).

    Raises:
        ArchlabError subclasses from :meth:`~archlab.graph.Graph.validate`.
    """
    graph.validate()
    return graph.cached("plan", lambda: _lower(graph))


def _lower(graph: Graph) -> Plan:
    shapes: dict[str, Shape] = {}
    sigs: dict[tuple, int] = {}  # (op, attribute values, in_shapes, shape) -> its number
    ops: dict[str, tuple[Op, bool]] = {}  # op name -> (definition, reads every input for its value)
    value_reads: dict[int, tuple[str, ...]] = {}
    firsts: list[Step] = []  # the first step of each distinct sig (and each step without one)
    index: list[int] = []  # per step, its position in firsts
    new = tuple.__new__  # Step(...) without NamedTuple's Python-level __new__
    steps = []
    for node in graph.topo_order():
        name, inputs = node.name, node.inputs
        entry = ops.get(node.op)
        if entry is None:
            op = get_op(node.op)
            entry = ops[node.op] = (op, not op.input_reads and type(op).reads is Op.reads)
        op, plain = entry
        shape = shapes[name] = node.meta["shape"]
        n = len(inputs)
        if plain:
            reads = value_reads.get(n) or value_reads.setdefault(n, ("value",) * n)
        else:
            reads = tuple(map(op.reads, range(n)))
        size = 1
        for d in shape:
            size *= d
        in_shapes = tuple(map(shapes.__getitem__, inputs))
        sig = key = None
        if not op.needs_graph:
            try:
                key = (node.op, tuple(node.attrs.values()), in_shapes, shape)
                sig = sigs.get(key)
            except TypeError:  # an unhashable attribute value
                key = None
        step = new(Step, (node, name, op, inputs, in_shapes, shape, reads, size, sig))
        if sig is None:
            sig = len(firsts)
            firsts.append(step)
            if key is not None:
                sigs[key] = sig
                step = new(Step, (node, name, op, inputs, in_shapes, shape, reads, size, sig))
        steps.append(step)
        index.append(sig)
    return Plan(steps, firsts, index)


class Plan(tuple):
    """The steps (a tuple of :class:`Step`), with what :func:`per_sig` needs:
    ``firsts``, the first step of each distinct sig (and every step without one),
    and ``index``, each step's position in ``firsts``."""

    firsts: tuple[Step, ...]
    index: tuple[int, ...]

    def __new__(cls, steps, firsts, index) -> Plan:
        self = super().__new__(cls, steps)
        self.firsts, self.index = tuple(firsts), tuple(index)
        return self


def per_sig(steps: Plan, rule: Callable[[Step], T]) -> list[T]:
    """``[rule(s) for s in steps]``, calling ``rule`` once per distinct :attr:`Step.sig`
    (in order of first appearance).

    ``rule`` must depend only on what the sig holds (the op's rule methods do).
    An exception propagates from the first step that raises it.
    """
    values = list(map(rule, steps.firsts))
    return list(map(values.__getitem__, steps.index))
