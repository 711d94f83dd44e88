"""Activation memory: output sizes, peak live memory at inference, training memory.

A pass over the graph in :meth:`Graph.topo_order` (the order the compiled
module runs its nodes) using each op's :meth:`~archlab.ops.base.Op.memory` rule.
No torch is needed. The rules follow what PyTorch's CPU kernels for each op's
``emit`` allocate and save for backward; ``tests/test_memory.py`` checks them to
the byte against the compiled module.

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
* **Peak live memory** of an inference forward (eval, no grad): a node's output
  is allocated when the node runs and freed after the last node that reads its
  values, or the values of a view of it, has run; graph outputs live to the
  end; the input is live from the start until its last reader. What an op
  reads of each input is its :meth:`~archlab.ops.base.Op.reads` declaration:
  a size reference (``upsample(x, like)``, ``crop2d``'s second input) is read
  at build time and keeps nothing alive; side outputs
  (:attr:`MemoryRule.side_outputs`: a ``max_pool2d_with_indices``'s int64
  indices) are allocated with the output and live until the last node that
  reads them (its ``max_unpool2d``), which need not keep the pool's values.
  While a node runs, the inputs it reads and its output are live together.
  Kernel workspaces and the transient partial sums of an add with 3+ inputs
  are not counted.
* **Training memory**: the tensors autograd saves for backward in a training
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
from archlab.analysis.counts import param_table
from archlab.graph.plan import per_sig, plan
from archlab.ops.base import MemoryRule

if TYPE_CHECKING:  # pragma: no cover
    from archlab.graph import Graph, Node

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


@dataclass(frozen=True)
class TrainingMemory:
    """Memory of one training step (see the module docstring); bytes.

    Fields:
        batch, dtype, optimizer: the configuration (``param_dtype`` for
            parameters, gradients and optimizer state).
        saved_bytes: node -> bytes saved for backward attributed to it.
        saved_activations: saved tensors in the activation dtype (a node's
            input or output, dropout masks); scales with dtype.
        saved_other: saved tensors of fixed dtype (int64 max-pool indices,
            batch-norm statistics in the parameters' dtype).
        params, grads, optimizer_state: parameter bytes, their gradients, and
            ``OPTIMIZER_STATES[optimizer]`` buffers of the same size.
        buffers: buffer bytes (batch-norm running statistics in fp32 and an
            int64 counter).
    """

    batch: int
    dtype: str
    param_dtype: str
    optimizer: str
    saved_bytes: Mapping[str, int]
    saved_activations: int
    saved_other: int
    params: int
    grads: int
    optimizer_state: int
    buffers: int

    @property
    def activations(self) -> int:
        """All bytes saved for backward."""
        return self.saved_activations + self.saved_other

    @property
    def total(self) -> int:
        """Activations + parameters + gradients + optimizer state + buffers."""
        return self.activations + self.params + self.grads + self.optimizer_state + self.buffers


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
    """node -> the node that allocated the storage its output lives in."""
    base: dict[str, str] = {}
    for s in steps:
        name = s.name
        r = rules[name]
        if r.alias is not None and (r.train_alias or not training):
            base[name] = base[s.inputs[r.alias]]
        else:
            base[name] = name
    return base


def _dtype_bytes(dtype: str, itemsize: int) -> int:
    """Bytes per element of a tensor of ``dtype`` (``"activation"``: ``itemsize``)."""
    return itemsize if dtype == "activation" else DTYPE_BYTES[dtype]


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
    for step, (_, name, op, inputs, _, _, reads, size, _) in enumerate(steps):
        out_el[name] = size
        if base[name] == name:
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
    freed = [0] * (end + 1)  # bytes freed after each step
    for key, step in last.items():
        freed[step] += out_b[key] if type(key) is str else side_b[key]

    live, live_at, peak, peak_node = 0, {}, -1, ""
    for step, s in enumerate(steps):
        name = s.name
        live += alloc[step]
        live_at[name] = live
        if live > peak:
            peak, peak_node = live, name
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


def training_memory(
    graph: Graph, *, batch: int, dtype: object = "float32", optimizer: str = "adam", param_dtype: object = "float32",
) -> TrainingMemory:
    """Memory of a training step: saved activations + parameters + gradients +
    optimizer state + buffers (see the module docstring).

    Writes ``node.meta["memory"]["saved_bytes"]`` for every node.

    Args:
        graph: a valid graph.
        batch: batch size.
        dtype: activation dtype (as for :func:`activation_memory`).
        optimizer: ``sgd``, ``sgd_momentum``, ``adam`` or ``adamw``.
        param_dtype: dtype of parameters, gradients and optimizer state (and of
            batch-norm's saved statistics); float32 unless stated.

    Raises:
        ArchlabError: an op has no memory rule, or an unknown dtype/optimizer.
    """
    if optimizer not in OPTIMIZER_STATES:
        raise ArchlabError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZER_STATES)}")
    dtype, param_dtype = dtype_name(dtype), dtype_name(param_dtype)
    itemsize, p_itemsize = DTYPE_BYTES[dtype], DTYPE_BYTES[param_dtype]
    rules, _ = _rules(graph)
    steps = plan(graph)
    base = _bases(steps, rules, training=True)
    own = [p for p, _ in param_table(graph)]
    n_params = sum(own)

    size = {s.name: s.size for s in steps}
    per_el = batch * itemsize
    buffers = 0
    requires_grad: dict[str, bool] = {}
    act_saved: dict[str, int] = {}  # storage (its allocating node) -> bytes: a tensor saved twice counts once
    extra_saved: dict[str, int] = {}  # node -> bytes of the extras it saves (masks, indices, statistics)
    extra_act = extra_other = 0
    extras_of: dict[int, tuple[int, int]] = {}  # id(rule) -> (extras in activation dtype, other extras)
    for (_, name, _, inputs, _, _, reads, _, _), own_params in zip(steps, own):
        r = rules[name]
        buffers += r.buffer_bytes
        # Size references and indices carry no gradient.
        if len(inputs) == 1:
            grads_in = (requires_grad[inputs[0]] and reads[0] == "value",)
        else:
            grads_in = tuple(requires_grad[i] and what == "value" for i, what in zip(inputs, reads))
        grad = requires_grad[name] = own_params > 0 or True in grads_in
        if not grad:
            continue  # no autograd node: nothing is saved
        for i in r.saved_inputs:
            if not r.cross_saved or any(g for j, g in enumerate(grads_in) if j != i):
                b = base[inputs[i]]
                act_saved[b] = per_el * size[b]
        if r.saved_output:
            b = base[name]
            act_saved[b] = per_el * size[b]
        if r.saved_extra:
            e = extras_of.get(id(r))
            if e is None:
                e_act = e_other = 0
                for x in r.saved_extra:
                    nbytes = (p_itemsize if x.dtype == "param" else _dtype_bytes(x.dtype, itemsize)) \
                        * x.elements * (batch if x.per_sample else 1)
                    if x.dtype == "activation":
                        e_act += nbytes
                    else:
                        e_other += nbytes
                e = extras_of[id(r)] = (e_act, e_other)
            extra_saved[name] = e[0] + e[1]
            extra_act += e[0]
            extra_other += e[1]

    per_node = dict.fromkeys(base, 0)
    for owner, nbytes in act_saved.items():
        per_node[owner] += nbytes
    for owner, nbytes in extra_saved.items():
        per_node[owner] += nbytes
    for s in steps:
        s.node.meta.setdefault("memory", {})["saved_bytes"] = per_node[s.name]
    p_bytes = n_params * p_itemsize
    return TrainingMemory(
        batch=batch, dtype=dtype, param_dtype=param_dtype, optimizer=optimizer, saved_bytes=_frozen(per_node),
        saved_activations=sum(act_saved.values()) + extra_act, saved_other=extra_other,
        params=p_bytes, grads=p_bytes, optimizer_state=OPTIMIZER_STATES[optimizer] * p_bytes, buffers=buffers,
    )
