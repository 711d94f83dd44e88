"""The one error an import raises: every problem, bounded to one short message.

:func:`import_error` turns the importer's list of problems into an
:class:`ImportTorchError` whose message stays under ``MAX_ERROR`` characters
whatever the model (a count by kind with example nodes, then as many per-node
reasons as fit); ``err.nodes`` lists every failing node and ``err.details``
every node's reason.
"""
from __future__ import annotations

from collections import Counter

import torch.fx as fx

from archlab.errors import ImportTorchError

MAX_ERROR = 500  # characters of an ImportTorchError's message, whatever the model
_KINDS = 3  # kinds of unsupported node named in the summary
_EXAMPLES = 2  # example nodes named per kind


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."


_FIX = "rewrite these parts with ops archlab supports, or file an issue asking for the missing op"


def import_error(cls: str, problems: list[tuple[str, str, str, str]], fx_nodes: dict[str, fx.Node]) -> ImportTorchError:
    """All problems in one error of at most ``MAX_ERROR`` characters whatever
    the model: a count by kind with example nodes, then as many per-node
    reasons as fit, first one of each kind. ``err.nodes`` lists every failing
    node, ``err.details`` every node's reason (unbounded).

    Args:
        cls: the imported module's class name.
        problems: ``(fx node, kind, "target: " or "", reason)``, in graph order.
        fx_nodes: the traced graph's nodes by name.

    A weight read (``get_attr``) whose every reader is itself unsupported
    (``F.batch_norm(x, self.mean, self.var, self.w, self.b)``) is not a
    problem of its own: it is counted with its reader.
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

    def kind(short: str, nodes: list[str]) -> str:
        shown = ", ".join(_cut(n, 20) for n in nodes[:_EXAMPLES]) + (", ..." if len(nodes) > _EXAMPLES else "")
        return f"{_cut(short, 44)} x{len(nodes)} ({shown})"

    summary = ", ".join(kind(*kv) for kv in ranked[:_KINDS])
    if len(ranked) > _KINDS:
        summary += f", and {len(ranked) - _KINDS} more kind(s)"
    head = (f"cannot import {_cut(cls, 30)}: {len(by_node)} fx node(s) of {len(kinds)} kind(s) cannot be "
            f"expressed in archlab: {summary}")
    firsts = [nodes[0] for _, nodes in ranked]
    order = firsts + [n for n in by_node if n not in firsts]
    every = [f"  - {node}: {desc}{'; also '.join(whys)}" for node, (_, desc, whys) in
             ((n, by_node[n]) for n in order)]
    # the short form drops the target (the summary names its kind) and keeps the reason and its fix
    short = [f"  - {node}: {'; also '.join(whys)}" for node, (_, _, whys) in ((n, by_node[n]) for n in order)]
    more = "  - ({} more; --traceback lists all)"
    budget = MAX_ERROR - len(head) - len(_FIX) - len(more) - 8
    lines: list[str] = []
    for line, brief in zip(every, short):
        room = min(200, budget - sum(len(x) + 1 for x in lines))
        if room < 60:
            break
        lines.append(line if len(line) <= room else _cut(brief, room))
    if len(lines) < len(every):
        lines.append(more.format(len(every) - len(lines)))
    text = "\n".join([head, *lines, _FIX])
    if len(text) > MAX_ERROR:  # only with many long kind names: the summary alone must do
        head = _cut(head, MAX_ERROR - len(_FIX) - 1)
        text = f"{head}\n{_FIX}"
    err = ImportTorchError(text)
    err.nodes = list(by_node)
    err.details = "\n".join(every)  # every node's reason, unbounded (archlab --traceback prints it)
    return err

