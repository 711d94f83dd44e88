"""The one error an import raises: every problem, bounded to one short message.

:func:`import_error` turns the importer's list of problems into an
:class:`ImportTorchError` whose message names each distinct unsupported kind of
node once, on its own line, with its count, the first module path where it
appears and that node's reason, then says what to do; it stays under
``MAX_ERROR`` characters whatever the model. ``err.nodes`` lists every failing
node and ``err.details`` every node's reason.
"""
from __future__ import annotations

from collections import Counter

from torch import fx

from archlab.errors import ImportTorchError

MAX_ERROR = 1600  # characters of an ImportTorchError's message, whatever the model
_KINDS = 8  # kinds of unsupported node named, one line each


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."


_FIX = ("what to do: rewrite these parts with ops archlab supports (`archlab ops` lists them), or file an issue "
        "asking for the missing op with the model that needs it")


def _where(node: fx.Node | None) -> str:
    """The module path a node belongs to (its own for a module call), or the model's root."""
    if node is None:
        return ""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack), "") if stack else ""


def import_error(cls: str, problems: list[tuple[str, str, str, str]], fx_nodes: dict[str, fx.Node]) -> ImportTorchError:
    """All problems in one error of at most ``MAX_ERROR`` characters whatever
    the model: one line per kind of unsupported node (count, first module path,
    first node and its reason), most frequent first, then what to do.
    ``err.nodes`` lists every failing node, ``err.details`` every node's reason
    (unbounded; ``archlab --traceback`` prints it).

    Args:
        cls: the imported module's class name.
        problems: ``(fx node, kind, "target: " or "", reason)``, in graph order.
        fx_nodes: the traced graph's nodes by name.

    A weight read (``get_attr``) whose every reader is itself unsupported is
    not a problem of its own: it is counted with its reader.
    """
    by_node: dict[str, tuple[str, str, list[str]]] = {}
    for node, short, desc, why in problems:
        by_node.setdefault(node, (short, desc, []))[2].append(why)
    reads: Counter = Counter()
    for node in list(by_node):
        n = fx_nodes.get(node)
        if n is not None and n.op == "get_attr" and n.users and all(
                u.name in by_node and u.op != "get_attr" for u in n.users):
            del by_node[node]
            reads.update(u.name for u in n.users)
    for node, k in reads.items():
        by_node[node][2].append(f"it reads {k} weight(s) directly")
    kinds: dict[str, list[str]] = {}
    for node, (short, _, _) in by_node.items():
        kinds.setdefault(short, []).append(node)
    ranked = sorted(kinds.items(), key=lambda kv: -len(kv[1]))
    head = f"cannot import {_cut(cls, 40)}: {len(by_node)} node(s) of {len(kinds)} kind(s) archlab cannot express:"
    lines = []
    budget = MAX_ERROR - len(head) - len(_FIX) - 60
    for short, nodes in ranked[:_KINDS]:
        first = nodes[0]
        where = _where(fx_nodes.get(first))
        at = f"first in {_cut(where, 60)} (node {_cut(first, 30)})" if where else f"first at node {_cut(first, 30)}"
        line = f"  - {_cut(short, 60)} x{len(nodes)}, {at}: {'; also '.join(by_node[first][2])}"
        room = min(260, budget - sum(len(x) + 1 for x in lines))
        if room < 80:
            break
        lines.append(_cut(line, room))
    if len(lines) < len(ranked):
        lines.append(f"  - and {len(ranked) - len(lines)} more kind(s) (--traceback lists every node)")
    text = "\n".join([head, *lines, _FIX])
    if len(text) > MAX_ERROR:  # only with an absurd class name: the head alone must do
        text = f"{_cut(head, MAX_ERROR - len(_FIX) - 1)}\n{_FIX}"
    err = ImportTorchError(text)
    err.nodes = list(by_node)
    err.details = "\n".join(f"  - {node}: {desc}{'; also '.join(whys)}" for node, (_, desc, whys) in by_node.items())
    return err
