"""Analyzers: passes over a graph that need no weights and no torch.

:func:`analyze` runs them all and returns an :class:`~archlab.analysis.report.Analysis`
with per-layer rows and totals; the passes are usable alone:

* :func:`~archlab.analysis.counts.param_counts`, :func:`~archlab.analysis.counts.mac_counts`
* :func:`~archlab.analysis.memory.activation_memory`, :func:`~archlab.analysis.train_memory.training_memory`
* :func:`~archlab.analysis.receptive_field.receptive_fields`

:mod:`archlab.analysis.measure` (torch) measures what a real forward holds, to
check the memory figures against.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from archlab.analysis.counts import mac_counts, param_counts
from archlab.analysis.layers import fold_layers, group_by_depth, last_allocating
from archlab.analysis.report import Analysis
from archlab.graph.plan import plan

if TYPE_CHECKING:  # pragma: no cover
    from archlab.graph import Graph

__all__ = ["Analysis", "analyze", "mac_counts", "param_counts"]


def _rf_value(pair):
    vals = [x if type(x) is int else int(x) if x.denominator == 1 else float(x) for x in pair]
    return vals[0] if vals[0] == vals[1] else vals


def _rf_columns(rf) -> dict:
    """The ``rf_*`` row keys (see :mod:`archlab.analysis.report` for the schema):
    size, stride and start of the field through the node's spatial paths (unclipped,
    so they rank by field size whether the node is global or not), ``None`` when
    it has none (after global pooling, or a constant such as a ``parameter``)."""
    local = None if rf.is_constant else rf.local_size if rf.is_global else rf.size
    return {
        "rf_size": None if local is None else _rf_value(local),
        "rf_stride": None if local is None else _rf_value(rf.jump),
        "rf_start": None if local is None else _rf_value(rf.start),
        "rf_global": rf.is_global,
        "rf_coverage": rf.coverage,
        "rf_aligned": rf.aligned,
    }


def analyze(
    graph: Graph,
    *,
    batch: int = 1,
    dtype: str = "float32",
    convention: str = "torchvision",
    depth: int | None = None,
    fold: bool = True,
    optimizer: str = "adam",
) -> Analysis:
    """Run every analyzer on ``graph``.

    Args:
        batch: batch size for MACs and memory (params are per model).
        dtype: activation dtype: ``float32``, ``float16`` or ``bfloat16``.
        convention: FLOP convention (``torchvision``, ``fvcore``, ``full``).
        depth: aggregate rows by scope prefix of this many dotted parts.
        fold: fold pointwise followers (BN, activations, views) into the layer
            before them, as layer tables do; ``False`` gives one row per node.
        optimizer: for the training-memory total (``sgd``, ``sgd_momentum``, ``adam``).

    Returns:
        An :class:`Analysis`; ``totals['activation_elements']`` is the sum of the
        layers' outputs (the lecture table's convention: VGG16 at 224 ->
        15,237,608 values per image, input included). With ``depth``, a scope
        row's ``params``, ``buffers``, ``macs`` and ``activation_*`` are sums
        over its layers (so each column still sums to its total) and its
        ``output_shape`` and ``rf_*`` are those of its last layer.
    """
    from archlab.analysis.memory import DTYPE_BYTES, _rules, activation_memory, training_memory
    from archlab.analysis.receptive_field import receptive_fields

    graph.validate()
    params, buffers = param_counts(graph)
    macs = mac_counts(graph, convention)
    mem = activation_memory(graph, batch=batch, dtype=dtype)
    train = training_memory(graph, batch=batch, dtype=dtype, optimizer=optimizer)
    rfs = receptive_fields(graph)
    itemsize = DTYPE_BYTES[mem.dtype]

    layers = fold_layers(graph)
    rules = _rules(graph)[0]
    op_of = {s.name: s.op.name for s in plan(graph)}

    def tail(group: list[str]) -> str:
        return last_allocating(graph, group, rules)

    groups = layers if fold else [[n] for n in op_of]
    named = group_by_depth(graph, groups, depth) if depth is not None else [(g[0], g) for g in groups]
    p_node, b_node, m_node = params.per_node, buffers.per_node, macs.per_node
    out_elements = dict(mem.out_elements)
    layer_tails = {tail(g) for g in layers}
    rf_cols: dict[int, dict] = {}  # pointwise nodes share their input's RF object
    rows = []
    for row_name, group in named:
        last = tail(group)
        rf = rfs[last]
        cols = rf_cols.get(id(rf))
        if cols is None:
            cols = rf_cols[id(rf)] = _rf_columns(rf)
        if depth is None:
            elements = out_elements[last] * batch
        else:  # a scope row sums its layers' outputs, as it sums their params and MACs
            elements = sum(out_elements[n] for n in group if n in layer_tails) * batch
        if len(group) == 1:
            n = group[0]
            op, n_params, n_buffers, n_macs = op_of[n], p_node[n], b_node[n], m_node.get(n, 0)
        else:
            op = "+".join(dict.fromkeys([op_of[n] for n in group])) if depth is None else "scope"
            n_params = n_buffers = n_macs = 0
            for n in group:
                n_params += p_node[n]
                n_buffers += b_node[n]
                n_macs += m_node.get(n, 0)
        row = {
            "name": row_name,
            "op": op,
            "output_shape": list(graph[last].shape),
            "params": n_params,
            "buffers": n_buffers,
            "macs": n_macs * batch,
            "activation_elements": elements,
            "activation_bytes": elements * itemsize,
        }
        row.update(cols)
        rows.append(row)
    total_macs = macs.total * batch
    inp = graph.input_nodes[0]
    totals = {
        "params": params.total,
        "buffers": buffers.total,
        "macs": total_macs,
        "flops": 2 * total_macs,
        "flops_convention": convention,
        "activation_elements": sum(out_elements[tail(g)] for g in layers) * batch,
        "activation_bytes": 0,
        "all_node_elements": mem.total_out_elements * batch,
        "peak_activation_bytes": mem.peak_bytes,
        "peak_node": mem.peak_node,
        "training_bytes": train.total,
        "training_detail": (
            f"{optimizer}, batch {batch}: saved activations {train.activations:,} B + params {train.params:,} B"
            f" + grads {train.grads:,} B + optimizer state {train.optimizer_state:,} B + buffers {train.buffers:,} B"
        ),
        "batch": batch,
        "dtype": mem.dtype,
        "depth": depth,
        "input_shape": list(inp.shape),
        "unsupported": macs.unsupported,
    }
    totals["activation_bytes"] = totals["activation_elements"] * itemsize
    notes = []
    if macs.unsupported:
        notes.append(f"no MAC rule for {', '.join(macs.unsupported)}: excluded from the MAC total")
    return Analysis(model=graph.name, rows=rows, totals=totals, notes=notes)
