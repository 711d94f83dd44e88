"""Activation memory: output sizes, peak live memory at inference, training memory.

A pass over the graph in :meth:`Graph.topo_order` (the order the compiled
module runs its nodes) using each op's :meth:`~archlab.ops.base.Op.memory` rule.
No torch is needed. The rules follow what PyTorch's CPU kernels for each op's
``emit`` allocate and save for backward; ``tests/test_memory.py`` checks them to
the byte against the tensors a real forward of the compiled module holds
(:mod:`archlab.analysis.measure`).

Conventions (all sizes in bytes unless a name says ``elements``):

* **Output elements** are per sample (``node.shape``, batch excluded). Every
  node has one, including the input and views; a *view* (flatten, identity,
  eval dropout: see :attr:`MemoryRule.alias`) allocates nothing, so the total
  counts every *materialised* tensor once: the input plus each node that
  allocates its output. Element-wise activations count: archlab compiles them
  out of place.
* **Table rows** reproduce a per-layer table in the style of the CS231n VGG16
  slide: the input and each layer, pooling or merge node, with element-wise
  activations folded into the layer before them (in place), views and no-ops
  left out (:attr:`MemoryRule.table_row`). For VGG16 at 224 the rows sum to
  15,237,608 values per image (the slide's "24M" is an acknowledged error,
  cs231n.github.io issue #88).
* **Peak live memory** of an inference forward (eval, no grad) of the compiled
  module: the most bytes that the graph's tensors hold at once while the nodes
  run in :meth:`Graph.topo_order`. Counted:

  - the graph inputs, live for the whole forward (the caller holds them);
  - each node's output, allocated when the node runs and freed after the last
    node that reads its values, or the values of a view of it, has run; graph
    outputs live to the end. What an op reads of each input is its
    :meth:`~archlab.ops.base.Op.reads` declaration: a size reference
    (``upsample(x, like)``, ``crop2d``'s second input) is read at build time and
    keeps nothing alive;
  - side outputs (:attr:`MemoryRule.side_outputs`: a
    ``max_pool2d_with_indices``'s int64 indices), allocated with the output and
    live until the last node that reads them (its ``max_unpool2d``), which need
    not keep the pool's values;
  - while a node runs, the inputs it reads and its output are live together;
  - the temporaries an op's kernel returns or allocates beside its output and
    frees within the call (:attr:`MemoryRule.scratch`: layer norm's mean and
    rstd, a broadcast matmul's expanded operand, attention's log-sum-exp), live
    while the node runs;
  - a view's storage is its input's, except that a ``reshape``/``flatten`` of a
    layout it cannot view (after a ``permute``) copies, as PyTorch does: the
    pass follows the strides of non-contiguous outputs to tell;
  - the partial sums of an ``add`` of 3+ inputs: the compiled module adds
    pairwise from the left (``(a + b) + c``), so from the second addition on a
    partial sum of the output's size is live beside the output; the inputs the
    first addition was the last reader of are freed before it.

  Left out: memory a kernel allocates and frees inside one call (oneDNN weight
  reorders and scratchpads, cuDNN workspaces), the contiguous copy some kernels
  make of a non-contiguous input (``linear`` or ``layer_norm`` after a
  ``permute``), parameters and buffers (a ``parameter`` node's output is a view
  of its parameter: it allocates nothing), and the allocator's rounding and
  caching. ``benchmarks/memory_honesty.py`` measures
  both: the graph's tensors to the byte, and the allocator's peak, which is
  higher by those workspaces (see ``docs/analysis.md``).
* **Training memory** (:mod:`archlab.analysis.train_memory`): the tensors autograd saves for backward in a training
  forward (deduplicated by storage: a tensor saved by several ops, or through a
  view, counts once; each is attributed to the node that produced it, extras
  such as max-pool indices to the node that saves them), plus parameters, their
  gradients, optimizer state and buffers. Gradients of activations, which exist
  only during backward, are not included.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

from archlab.errors import ArchlabError
from archlab.graph.plan import per_sig, plan
from archlab.ops.base import MemoryRule

if TYPE_CHECKING:  # pragma: no cover
    from archlab.graph import Graph

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "bool": 1}
_DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
OPTIMIZER_STATES = {"sgd": 0, "sgd_momentum": 1, "adam": 2, "adamw": 2}
"""Optimizer state tensors per parameter (SGD: none; momentum: one buffer;
Adam/AdamW: exp_avg and exp_avg_sq)."""


def dtype_name(dtype: object) -> str:
    """Canonical name of a float dtype given as ``"fp16"``, ``"bfloat16"`` or a
    ``torch.dtype``.

    Raises:
        ArchlabError: for anything but float32, float16 and bfloat16.
    """
    name = str(dtype).removeprefix("torch.")
    name = _DTYPE_ALIASES.get(name, name)
    if name not in ("float32", "float16", "bfloat16"):
        raise ArchlabError(f"unknown dtype {dtype!r}; use float32/fp32, float16/fp16 or bfloat16/bf16")
    return name


def _frozen(d: dict) -> Mapping:
    return MappingProxyType(d)


@dataclass(frozen=True)
class MemoryReport:
    """Inference activation memory of a graph (see the module docstring).

    Fields:
        batch: the batch size the byte figures are for.
        dtype: activation dtype (``float32``, ``float16``, ``bfloat16``).
        out_elements: node -> output elements per sample (views included).
        out_bytes: node -> bytes its output allocates for the batch (0 for views).
        alias_of: node -> the node whose storage its output shares (itself when
            it allocates).
        table_rows: node -> output elements per sample of the nodes that are
            rows of a CS231n-style layer table.
        live_bytes: node -> bytes live while it runs (the live-set timeline, in
            execution order).
        total_out_elements: sum of ``out_elements`` over allocating nodes (input
            included), per sample.
        total_out_bytes: the same in bytes for the batch.
        table_elements: sum of ``table_rows`` (15,237,608 for VGG16 at 224).
        peak_bytes: the maximum of ``live_bytes``.
        peak_node: the first node at which it occurs.
        side_bytes: node -> bytes of its side outputs for the batch (max-pool
            indices kept for unpooling; 0 for most nodes), counted in the live
            set, not in the output totals.
    """

    batch: int
    dtype: str
    out_elements: Mapping[str, int]
    out_bytes: Mapping[str, int]
    alias_of: Mapping[str, str]
    table_rows: Mapping[str, int]
    live_bytes: Mapping[str, int]
    total_out_elements: int
    total_out_bytes: int
    table_elements: int
    peak_bytes: int
    peak_node: str
    side_bytes: Mapping[str, int] = field(default_factory=lambda: _frozen({}))


def unsupported_ops(graph: Graph) -> list[str]:
    """``"op 'node'"`` for every node whose op has no memory rule."""
    return list(_rules(graph, strict=False)[1])


def _rules(graph: Graph, *, strict: bool = True) -> tuple[dict[str, MemoryRule], list[str]]:
    steps = plan(graph)
    rules, missing = graph.cached("memory_rules", lambda: _collect_rules(steps))
    if strict and missing:
        ops = sorted({m.split(" ")[0] for m in missing})
        raise ArchlabError(
            f"memory: no memory rule for op(s) {', '.join(ops)} (node(s) {', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); give the op class a `memory` method"
        )
    return rules, missing


def _collect_rules(steps) -> tuple[dict[str, MemoryRule], list[str]]:
    def rule(s):
        try:
            return s.op.memory(s.node, s.in_shapes, s.shape)
        except NotImplementedError:
            return None

    rules: dict[str, MemoryRule] = {}
    missing: list[str] = []
    for s, r in zip(steps, per_sig(steps, rule)):
        if r is None:
            missing.append(f"{s.op.name} '{s.name}'")
        else:
            rules[s.name] = r
    return rules, missing


def _bases(steps, rules: dict[str, MemoryRule], *, training: bool) -> dict[str, str]:
    """node -> the node that allocated the storage its output lives in.

    A view (:attr:`MemoryRule.alias`) shares its input's storage unless the op
    cannot view the input's layout (:meth:`~archlab.ops.base.Op.view_strides`:
    a ``reshape`` of a permuted tensor copies); so the layouts of non-contiguous
    outputs are followed (permutes, slices, and element-wise ops that keep a
    permuted layout), row-major ones implied."""
    from archlab.ops.dims import dense_in_order, dense_strides, permuted_order

    base: dict[str, str] = {}
    strides: dict[str, tuple[int, ...]] = {}  # node -> strides of an output that is not row-major
    for s in steps:
        name = s.name
        r = rules[name]
        if r.alias is not None and (r.train_alias or not training):
            src = s.inputs[r.alias]
            st = strides.get(src)
            if st is None and s.shape == s.in_shapes[r.alias]:
                base[name] = base[src]  # identity, dropout, a no-op reshape: same layout
                continue
            dense = dense_strides(s.shape)
            view = s.op.view_strides(s.node, s.in_shapes, s.shape, st or dense_strides(s.in_shapes[r.alias]))
            if view is not None:
                base[name] = base[src]
                if view != dense:
                    strides[name] = view
                continue
            base[name] = name  # a copy, row-major
            continue
        base[name] = name
        if r.layout == "like_input" and s.inputs and s.inputs[0] in strides and s.in_shapes[0] == s.shape:
            st = dense_in_order(s.shape, permuted_order(s.shape, strides[s.inputs[0]]))
            if st != dense_strides(s.shape):
                strides[name] = st
    return base


def _dtype_bytes(dtype: str, itemsize: int) -> int:
    """Bytes per element of a tensor of ``dtype`` (``"activation"``: ``itemsize``;
    ``"param"``, at inference, where a model runs in one dtype: ``itemsize`` too)."""
    return itemsize if dtype in ("activation", "param") else DTYPE_BYTES[dtype]


_PAIRWISE_FOLD = frozenset({"add"})
"""Ops whose ``emit`` folds 3+ inputs pairwise from the left (``Add.emit``:
``(a + b) + c``), each partial sum a new tensor of the output's size."""


def _pairwise_partials(steps, base: dict[str, str], last: dict, per_el: int) -> dict[int, int]:
    """step -> bytes live beyond its inputs and output while it runs: for an op
    of :data:`_PAIRWISE_FOLD` with 3+ inputs, the partial sum that is live beside
    the next one, less the inputs the first addition freed (bases whose last
    reader is this step and that the rest of the fold does not read)."""
    extra: dict[int, int] = {}
    size: dict[str, int] = {}
    for step, s in enumerate(steps):
        if len(s.inputs) < 3 or s.op.name not in _PAIRWISE_FOLD:
            continue
        if not size:
            size = {t.name: t.size for t in steps}
        later = {base[i] for i in s.inputs[2:]}
        freed = {base[i] for i in s.inputs[:2]} - later
        released = sum(per_el * size[b] for b in freed if last.get(b) == step)
        if (partial := per_el * s.size - released) > 0:
            extra[step] = partial
    return extra


def activation_memory(graph: Graph, *, batch: int = 1, dtype: object = "float32") -> MemoryReport:
    """Output sizes and peak live memory of an inference forward.

    Writes ``node.meta["memory"]`` = ``{"out_elements", "out_bytes",
    "side_bytes", "live_bytes", "alias_of"}`` for every node.

    Args:
        graph: a valid graph (shape inference runs if needed).
        batch: batch size.
        dtype: activation dtype: ``float32``/``fp32``, ``float16``/``fp16``,
            ``bfloat16``/``bf16`` (or a ``torch.dtype``).

    Returns:
        A :class:`MemoryReport`; bytes are for the whole batch.

    Raises:
        ArchlabError: an op has no memory rule (naming the nodes), or a bad dtype.
    """
    dtype = dtype_name(dtype)
    itemsize = DTYPE_BYTES[dtype]
    rules, _ = _rules(graph)
    steps = plan(graph)
    base = _bases(steps, rules, training=False)
    per_el = batch * itemsize

    # Storages: each allocating node's output (keyed by the node) and each side
    # output (keyed by (node, name)). A storage is freed after the step of its
    # last reader (:meth:`Op.reads`); graph outputs never; one nobody reads,
    # at once.
    out_el: dict[str, int] = {}
    out_b: dict[str, int] = {}
    side_b: dict = {}
    per_node_side: dict[str, int] = {}
    alloc: list[int] = []  # bytes allocated by each step (output and side outputs)
    last: dict = {}
    total_el = 0
    scratch: dict[int, int] = {}  # step -> bytes of temporaries live while it runs
    for step, (_, name, op, inputs, _, _, reads, size, _) in enumerate(steps):
        out_el[name] = size
        rule = rules[name]
        if rule.scratch:
            scratch[step] = sum(_dtype_bytes(x.dtype, itemsize) * x.elements * (batch if x.per_sample else 1)
                                for x in rule.scratch)
        if base[name] == name and rule.allocates:
            out_b[name] = nbytes = per_el * size
            last[name] = step
            total_el += size
        else:
            out_b[name] = nbytes = 0
        side = 0
        for x in rules[name].side_outputs:
            side += (b := batch * _dtype_bytes(x.dtype, itemsize) * x.elements)
            side_b[(name, x.name)] = b
            last[(name, x.name)] = step
        per_node_side[name] = side
        alloc.append(nbytes + side)
        for i, what in zip(inputs, reads):
            if what == "value":
                last[base[i]] = step
            elif what != "shape":
                key = (i, what)
                if key not in last:
                    raise ArchlabError(
                        f"{op.name} '{name}': reads the {what!r} of input '{i}', but {graph[i].op} '{i}' has no "
                        f"such side output (MemoryRule.side_outputs)"
                    )
                last[key] = step
    end = len(steps)
    for o in graph.outputs.values():
        last[base[o]] = end
    for n in graph.input_nodes:  # the caller holds the inputs through the forward
        last[base[n.name]] = end
    transient = _pairwise_partials(steps, base, last, per_el)
    freed = [0] * (end + 1)  # bytes freed after each step
    for key, step in last.items():
        freed[step] += out_b.get(key, 0) if type(key) is str else side_b[key]

    live, live_at, peak, peak_node = 0, {}, -1, ""
    for step, s in enumerate(steps):
        name = s.name
        live += alloc[step]
        live_at[name] = at = live + transient.get(step, 0) + scratch.get(step, 0)
        if at > peak:
            peak, peak_node = at, name
        live -= freed[step]
        s.node.meta["memory"] = {
            "out_elements": out_el[name], "out_bytes": out_b[name], "side_bytes": per_node_side[name],
            "live_bytes": live_at[name], "alias_of": base[name],
        }

    from archlab.analysis.layers import fold_layers

    rows = {group[0]: out_el[group[0]] for group in fold_layers(graph)}
    return MemoryReport(
        batch=batch, dtype=dtype, out_elements=_frozen(out_el), out_bytes=_frozen(out_b),
        alias_of=_frozen(base), table_rows=_frozen(rows), live_bytes=_frozen(live_at),
        total_out_elements=total_el, total_out_bytes=batch * itemsize * total_el,
        table_elements=sum(rows.values()), peak_bytes=peak, peak_node=peak_node, side_bytes=_frozen(per_node_side),
    )


def __getattr__(name: str):
    """``training_memory`` and ``TrainingMemory`` live in
    :mod:`archlab.analysis.train_memory` (which builds on the helpers above) and
    are importable from here too."""
    if name in ("training_memory", "TrainingMemory"):
        from archlab.analysis import train_memory

        return getattr(train_memory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
