"""Analyzers: passes over a graph that need no weights and no torch.

:func:`analyze` runs them all and returns an :class:`~archlab.analysis.report.Analysis`
with per-layer rows and totals; the passes are usable alone:

* :func:`~archlab.analysis.counts.param_counts`, :func:`~archlab.analysis.counts.mac_counts`
* :func:`~archlab.analysis.memory.activation_memory`, :func:`~archlab.analysis.memory.training_memory`
* :func:`~archlab.analysis.receptive_field.receptive_fields`
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from archlab.analysis.counts import mac_counts, param_counts
from archlab.analysis.layers import fold_layers, group_by_depth, last_allocating
from archlab.analysis.report import Analysis

if TYPE_CHECKING:  # pragma: no cover
    from archlab.graph import Graph

__all__ = ["Analysis", "analyze", "mac_counts", "param_counts"]


def _rf_value(pair):
    vals = [int(x) if x.denominator == 1 else float(x) for x in pair]
    return vals[0] if vals[0] == vals[1] else vals


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
        rows' outputs (the lecture table's convention: VGG16 at 224 ->
        15,237,608 values per image, input included).
    """
    from archlab.analysis.memory import DTYPE_BYTES, activation_memory, training_memory
    from archlab.analysis.receptive_field import receptive_fields

    graph.validate()
    params, buffers = param_counts(graph)
    macs = mac_counts(graph, convention)
    mem = activation_memory(graph, batch=batch, dtype=dtype)
    train = training_memory(graph, batch=batch, dtype=dtype, optimizer=optimizer)
    rfs = receptive_fields(graph)
    itemsize = DTYPE_BYTES[mem.dtype]

    layers = fold_layers(graph)

    def tail(group: list[str]) -> str:
        return last_allocating(graph, group)

    groups = layers if fold else [[n.name] for n in graph.topo_order()]
    named = group_by_depth(graph, groups, depth) if depth is not None else [(g[0], g) for g in groups]
    rows = []
    for row_name, group in named:
        last = tail(group)
        rf = rfs[last]
        elements = mem.out_elements[last] * batch
        rows.append({
            "name": row_name,
            "op": "+".join(dict.fromkeys(graph[n].op for n in group)) if depth is None or len(group) == 1 else "scope",
            "output_shape": list(graph[last].shape),
            "params": sum(params.per_node[n] for n in group),
            "buffers": sum(buffers.per_node[n] for n in group),
            "macs": sum(macs.per_node.get(n, 0) for n in group) * batch,
            "activation_elements": elements,
            "activation_bytes": elements * itemsize,
            "rf_size": _rf_value(rf.size),
            "rf_stride": _rf_value(rf.jump),
            "rf_start": _rf_value(rf.start),
            "rf_global": rf.is_global,
            "rf_local_size": _rf_value(rf.local_size) if rf.is_global and rf.local_size is not None else None,
            "rf_aligned": rf.aligned,
        })
    total_macs = macs.total * batch
    inp = graph.input_nodes[0]
    totals = {
        "params": params.total,
        "buffers": buffers.total,
        "macs": total_macs,
        "flops": 2 * total_macs,
        "flops_convention": convention,
        "activation_elements": sum(mem.out_elements[tail(g)] for g in layers) * batch,
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
        "input_shape": list(inp.shape),
        "unsupported": macs.unsupported,
    }
    totals["activation_bytes"] = totals["activation_elements"] * itemsize
    notes = []
    if macs.unsupported:
        notes.append(f"no MAC rule for {', '.join(macs.unsupported)}: excluded from the MAC total")
    return Analysis(model=graph.name, rows=rows, totals=totals, notes=notes)
