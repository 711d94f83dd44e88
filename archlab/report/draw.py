"""``archlab draw``: a picture of a graph with matplotlib (SVG, PNG or PDF).

Boxes are the layers of ``archlab analyze`` (a conv with its BN and ReLU is one
box) or, with ``depth``, the scopes its table shows at that depth (``layer1``,
``layer1.0``, ...). Boxes are laid out top to bottom by topological generation
(networkx), each labelled with its name, its ops and its output shape; an edge
carries the shape of the tensor it passes, and one that skips boxes (a residual
or U-Net link) bows out to the right in orange. No Graphviz binary is needed.
"""
from __future__ import annotations

from typing import Optional

from archlab.errors import ArchlabError

MAX_BOXES = 400  # more than this is unreadable as one picture: ask for a --depth


def blocks(graph, depth: Optional[int]) -> tuple[list[tuple[str, list[str]]], "object"]:
    """The boxes ``(label, node names)`` and the networkx DiGraph between them (a DAG;
    scopes whose boxes would form a cycle are merged into one box)."""
    import networkx as nx

    from archlab.analysis.layers import fold_layers, group_by_depth

    groups = fold_layers(graph)
    named = group_by_depth(graph, groups, depth) if depth is not None else [(g[0], g) for g in groups]
    dag = _links(graph, named)
    if not nx.is_directed_acyclic_graph(dag):
        cond = nx.condensation(dag)
        named = [(" + ".join(named[k][0] for k in sorted(cond.nodes[c]["members"])),
                  [n for k in sorted(cond.nodes[c]["members"]) for n in named[k][1]]) for c in cond.nodes]
        dag = _links(graph, named)
    return named, dag


def _links(graph, named):
    import networkx as nx

    owner = {n: k for k, (_, names) in enumerate(named) for n in names}
    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(named)))
    for node in graph:
        for src in node.inputs:
            if owner[src] != owner[node.name]:
                dag.add_edge(owner[src], owner[node.name], shape=graph[src].shape)
    return dag


def draw_figure(graph, *, depth: Optional[int] = None):
    """The picture as a matplotlib ``Figure``.

    Raises:
        ArchlabError: more than :data:`MAX_BOXES` boxes (naming the ``--depth`` that fits).
    """
    import matplotlib.pyplot as plt
    import networkx as nx

    if any(n.shape is None for n in graph):
        graph.infer_shapes()
    named, dag = blocks(graph, depth)
    if len(named) > MAX_BOXES:
        raise ArchlabError(f"{graph.name} has {len(named)} boxes at {'full detail' if depth is None else f'depth {depth}'}; "
                           f"at most {MAX_BOXES} make a readable picture: pass --depth {1 if depth is None else max(1, depth - 1)}")
    rows = [sorted(gen) for gen in nx.topological_generations(dag)]
    widest = max(len(r) for r in rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 3.2 * widest), max(3.0, 0.95 * len(rows) + 1)))
    pos = {}
    for y, row in enumerate(rows):
        for x, k in enumerate(row):
            pos[k] = ((x - (len(row) - 1) / 2) * 3.2, -y)
    skips = 0
    for a, b, data in dag.edges(data=True):
        (x0, y0), (x1, y1) = pos[a], pos[b]
        skip = y0 - y1 > 1  # past other boxes (a skip link): bow out to the right of the column
        skips += skip
        bend = -0.5 if skip else 0.0
        ax.annotate("", xy=(x1, y1 + 0.28), xytext=(x0, y0 - 0.28),
                    arrowprops=dict(arrowstyle="-|>", color="#b05a00" if skip else "#666", lw=0.8, shrinkA=0,
                                    shrinkB=0, connectionstyle=f"arc3,rad={bend}"))
        lx = (x0 + x1) / 2 + (0.08 if not skip else 0.5 * (y0 - y1) * 0.5 + 0.1)
        ly = (y0 + y1) / 2 + (0.3 * (skips % 3) if skip else 0.0)  # nested links share a middle: stagger
        ax.text(lx, ly, _shape(data["shape"]), fontsize=6.5, color="#b05a00" if skip else "#444",
                ha="left", va="center")
    for k, (name, names) in enumerate(named):
        ops = list(dict.fromkeys(graph[n].op for n in names))
        text = "+".join(ops) if len(ops) <= 3 else f"{len(names)} nodes"
        last = names[-1]
        x, y = pos[k]
        inp = graph[last].op == "input"
        ax.text(x, y, f"{name}\n{text}  {_shape(graph[last].shape)}", ha="center", va="center", fontsize=7.5,
                bbox=dict(boxstyle="round,pad=0.35", fc="#e8f0fe" if not inp else "#fff4d6", ec="#4a6fa5", lw=0.8))
    ax.set_xlim(-1.8 * widest - 0.4, 1.8 * widest + 1.6)
    ax.set_ylim(-len(rows) + 0.4, 0.6)
    ax.axis("off")
    ax.set_title(f"{graph.name}: {graph.num_params():,} params"
                 + (f", scopes at depth {depth}" if depth is not None else ""), fontsize=10)
    fig.tight_layout()
    return fig


def picture_format(path: str) -> str:
    """``svg``, ``png`` or ``pdf`` from the file name.

    Raises:
        ArchlabError: another or no extension.
    """
    fmt = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if fmt not in ("svg", "png", "pdf"):
        raise ArchlabError(f"cannot tell the picture format of {path!r}: end the name in .svg, .png or .pdf")
    return fmt


def write_drawing(graph, path: str, *, depth: Optional[int] = None) -> str:
    """Draw ``graph`` into ``path``; the format is the extension's (svg, png or pdf)."""
    import matplotlib.pyplot as plt

    fmt = picture_format(path)
    fig = draw_figure(graph, depth=depth)
    try:
        fig.savefig(path, format=fmt, dpi=120)
    except OSError as e:
        raise ArchlabError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return path


def _shape(shape) -> str:
    return "x".join(map(str, shape)) if shape else "?"


__all__ = ["draw_figure", "write_drawing", "picture_format", "blocks", "MAX_BOXES"]
