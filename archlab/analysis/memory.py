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
from archlab.ops import get_op
from archlab.ops.base import MemoryRule, numel

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
    graph.validate()
    rules, missing = graph.cached("memory_rules", lambda: _collect_rules(graph))
    if strict and missing:
        ops = sorted({m.split(" ")[0] for m in missing})
        raise ArchlabError(
            f"memory: no memory rule for op(s) {', '.join(ops)} (node(s) {', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); give the op class a `memory` method"
        )
    return rules, missing


def _collect_rules(graph: Graph) -> tuple[dict[str, MemoryRule], list[str]]:
    rules: dict[str, MemoryRule] = {}
    missing: list[str] = []
    for node in graph.topo_order():
        shapes = [graph[i].shape for i in node.inputs]
        try:
            rules[node.name] = get_op(node.op).memory(node, shapes, node.shape)
        except NotImplementedError:
            missing.append(f"{node.op} '{node.name}'")
    return rules, missing


def _bases(order: list[Node], rules: dict[str, MemoryRule], *, training: bool) -> dict[str, str]:
    """node -> the node that allocated the storage its output lives in."""
    base: dict[str, str] = {}
    for node in order:
        r = rules[node.name]
        aliased = r.alias is not None and (r.train_alias or not training)
        base[node.name] = base[node.inputs[r.alias]] if aliased else node.name
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
    order = graph.topo_order()
    base = _bases(order, rules, training=False)
    out_el = {n.name: numel(n.shape) for n in order}
    out_b = {n.name: (batch * itemsize * out_el[n.name] if base[n.name] == n.name else 0) for n in order}
    side_b = {(n.name, x.name): batch * _dtype_bytes(x.dtype, itemsize) * x.elements
              for n in order for x in rules[n.name].side_outputs}

    # Storages: each allocating node's output (keyed by the node) and each side
    # output (keyed by (node, name)). A storage is freed after the step of its
    # last reader (:meth:`Op.reads`); graph outputs never; one nobody reads,
    # at once.
    pos = {n.name: i for i, n in enumerate(order)}
    last: dict = {n.name: i for i, n in enumerate(order) if base[n.name] == n.name}
    last.update({key: pos[key[0]] for key in side_b})
    for node in order:
        op = get_op(node.op)
        for k, i in enumerate(node.inputs):
            what = op.reads(k)
            if what == "shape":
                continue
            key = base[i] if what == "value" else (i, what)
            if key not in last:
                raise ArchlabError(
                    f"{node.op} '{node.name}': reads the {what!r} of input '{i}', but {graph[i].op} '{i}' has no "
                    f"such side output (MemoryRule.side_outputs)"
                )
            last[key] = max(last[key], pos[node.name])
    for o in graph.outputs.values():
        last[base[o]] = len(order)
    frees: dict[int, list] = {}
    for key, step in last.items():
        frees.setdefault(step, []).append(key)
    nbytes = {**out_b, **side_b}

    live, live_at, peak, peak_node = 0, {}, -1, ""
    for step, node in enumerate(order):
        live += out_b[node.name] + sum(side_b[(node.name, x.name)] for x in rules[node.name].side_outputs)
        live_at[node.name] = live
        if live > peak:
            peak, peak_node = live, node.name
        live -= sum(nbytes[key] for key in frees.get(step, ()))

    from archlab.analysis.layers import fold_layers

    rows = {group[0]: out_el[group[0]] for group in fold_layers(graph)}
    per_node_side = {n.name: 0 for n in order}
    for (name, _), b in side_b.items():
        per_node_side[name] += b
    for node in order:
        node.meta["memory"] = {
            "out_elements": out_el[node.name], "out_bytes": out_b[node.name], "side_bytes": per_node_side[node.name],
            "live_bytes": live_at[node.name], "alias_of": base[node.name],
        }
    total_el = sum(out_el[n] for n in out_el if base[n] == n)
    return MemoryReport(
        batch=batch, dtype=dtype, out_elements=_frozen(out_el), out_bytes=_frozen(out_b),
        alias_of=_frozen(dict(base)), table_rows=_frozen(rows), live_bytes=_frozen(live_at),
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
    order = graph.topo_order()
    base = _bases(order, rules, training=True)

    n_params, buffers = 0, 0
    requires_grad: dict[str, bool] = {}
    saved: dict[tuple, tuple[str, int, bool]] = {}  # storage key -> (owner, bytes, in activation dtype)
    for node in order:
        r = rules[node.name]
        shapes = [graph[i].shape for i in node.inputs]
        own_params = get_op(node.op).params(node, shapes)
        n_params += own_params
        buffers += r.buffer_bytes
        op = get_op(node.op)
        # Size references and indices carry no gradient.
        grads_in = [requires_grad[i] and op.reads(k) == "value" for k, i in enumerate(node.inputs)]
        requires_grad[node.name] = own_params > 0 or any(grads_in)
        if not requires_grad[node.name]:
            continue  # no autograd node: nothing is saved
        tensors = [node.inputs[i] for i in r.saved_inputs
                   if not r.cross_saved or any(g for j, g in enumerate(grads_in) if j != i)]
        if r.saved_output:
            tensors.append(node.name)
        for t in tensors:
            b = base[t]
            saved[("act", b)] = (b, batch * itemsize * numel(graph[b].shape), True)
        for k, x in enumerate(r.saved_extra):
            size = p_itemsize if x.dtype == "param" else _dtype_bytes(x.dtype, itemsize)
            count = x.elements * (batch if x.per_sample else 1)
            saved[("extra", node.name, k)] = (node.name, size * count, x.dtype == "activation")

    per_node = {n.name: 0 for n in order}
    for owner, nbytes, _ in saved.values():
        per_node[owner] += nbytes
    for node in order:
        node.meta.setdefault("memory", {})["saved_bytes"] = per_node[node.name]
    p_bytes = n_params * p_itemsize
    return TrainingMemory(
        batch=batch, dtype=dtype, param_dtype=param_dtype, optimizer=optimizer, saved_bytes=_frozen(per_node),
        saved_activations=sum(b for _, b, act in saved.values() if act),
        saved_other=sum(b for _, b, act in saved.values() if not act),
        params=p_bytes, grads=p_bytes, optimizer_state=OPTIMIZER_STATES[optimizer] * p_bytes, buffers=buffers,
    )
