"""Graph validation, stated as a list of rules checked in order.

1. every input of every node exists;
2. the graph is acyclic;
3. it has at least one input and one output;
4. every op is registered and arity/attributes fit (checked at node creation);
5. shapes fit (shape inference: channels, spatial sizes, kernels vs padded input,
   positive sizes);
6. no dangling nodes: every node feeds an output, every input is used;
7. a node that ``shares`` another's weights names a node of the same op and
   attributes, with as many parameters and buffers, that shares no other's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from archlab.errors import CycleError, DanglingNodeError, GraphError, UnknownNodeError, short_list
from archlab.ops.base import SHARES, get_op

if TYPE_CHECKING:  # pragma: no cover
    from archlab.graph.graph import Graph


def check_inputs_exist(graph: Graph) -> None:
    for node in graph.nodes:
        for i in node.inputs:
            if i not in graph:
                raise UnknownNodeError(f"{node.op} '{node.name}': input '{i}' does not exist in graph {graph.name}")


def check_acyclic(graph: Graph) -> None:
    graph.topo_order()  # raises CycleError via raise_cycle


def raise_cycle(graph: Graph) -> None:
    """Raise CycleError naming the nodes on one cycle."""
    import networkx as nx

    cycle = nx.find_cycle(graph.nx)
    names = [f"'{u}'" for u, *_ in cycle] + [f"'{cycle[0][0]}'"]
    if len(names) > 9:  # a 20,000-node cycle: its ends, and how many between
        names = [*names[:4], f"... ({len(names) - 8:,} more)", *names[-4:]]
    path = " -> ".join(names)
    first = graph[cycle[0][0]] if cycle[0][0] in graph else None
    where = f"{first.op} '{first.name}': " if first else ""
    raise CycleError(f"{where}the graph has a cycle {path}; a network must be a DAG")


def check_dangling(graph: Graph) -> None:
    live: set[str] = set()
    stack = list(graph.outputs.values())
    while stack:
        name = stack.pop()
        if name not in live:
            live.add(name)
            stack.extend(graph[name].inputs)
    dead = [n for n in graph.nodes if n.name not in live]
    if dead:
        listed = ", ".join(f"{n.op} '{n.name}'" for n in dead[:5])
        more = f" and {len(dead) - 5} more" if len(dead) > 5 else ""
        raise DanglingNodeError(
            f"{listed}{more}: not used by any output ({short_list(list(graph.outputs.values()))}); "
            "remove the node(s) or mark them as an output"
        )


def check_shared(graph: Graph) -> None:
    for node in graph.nodes:
        target = node.attrs.get(SHARES)
        if target is None:
            continue
        where = f"{node.op} '{node.name}': shares the weights of '{target}'"
        other = graph[target] if target in graph else None
        if other is None:
            raise UnknownNodeError(f"{where}, which does not exist in graph {graph.name}")
        if SHARES in other.attrs:
            raise GraphError(f"{where}, which itself shares '{other.attrs[SHARES]}'; name that node instead")
        mine = {k: v for k, v in node.attrs.items() if k != SHARES}
        if other.op != node.op or other.attrs != mine:
            raise GraphError(f"{where}, a {other.op} with other attributes; weights are shared by nodes of one op "
                             "and the same attributes")
        op = get_op(node.op)
        if not op.shareable:
            raise GraphError(f"{where}; {node.op} holds its own tensor, so it cannot share (layers with weights can)")
        shapes = [[graph[i].shape for i in n.inputs] for n in (node, other)]
        counts = [(op.params(n, s), op.buffers(n, s)) for n, s in zip((node, other), shapes)]
        if counts[0] != counts[1] or counts[1] == (0, 0) or op.weight_shape(node, shapes[0]) != \
                op.weight_shape(other, shapes[1]):
            raise GraphError(f"{where}, but their inputs ({', '.join(map(str, (shapes[0][:1], shapes[1][:1])))}) "
                             "need weights of other shapes, or there are none")


def validate(graph: Graph) -> None:
    """Check ``graph`` and infer its shapes.

    Raises:
        ArchlabError subclasses (UnknownNodeError, CycleError, GraphError,
        ShapeError, ChannelMismatchError, SpatialMismatchError, DanglingNodeError),
        each naming the node concerned.
    """
    if not graph._cache.get("ordered"):  # set by the builder, which adds nodes after their inputs
        check_inputs_exist(graph)
        check_acyclic(graph)
    if not graph.input_nodes:
        raise GraphError(f"graph {graph.name} has no input node; add one with op 'input'")
    if not graph.outputs:
        raise GraphError(f"graph {graph.name} has no output; mark one with set_output()")
    if not graph._cache.get("shapes"):  # the builder infers each node as it is added
        graph.infer_shapes()
    check_dangling(graph)
    check_shared(graph)
