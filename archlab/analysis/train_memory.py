"""Training memory: what autograd saves for backward in a training forward, plus
parameters, gradients, optimizer state and buffers (see :mod:`archlab.analysis.memory`
for the conventions; ``tests/test_memory.py`` checks the saved bytes to the byte
with ``torch.autograd.graph.saved_tensors_hooks``). No torch is needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from archlab.analysis.counts import param_table
from archlab.analysis.memory import (
    DTYPE_BYTES, OPTIMIZER_STATES, _bases, _dtype_bytes, _frozen, _rules, dtype_name,
)
from archlab.errors import ArchlabError
from archlab.graph.plan import plan
from archlab.ops.base import SHARES

if TYPE_CHECKING:  # pragma: no cover
    from archlab.graph import Graph


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
    # a node sharing another's weights has weights of its own to differentiate, counted there
    n_params = sum(p for p, _ in param_table(graph))
    own = [p or int(SHARES in graph[s[1]].attrs) for (p, _), s in zip(param_table(graph), steps)]

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
            cross = r.cross_saved and (r.cross_inputs is None or i in r.cross_inputs)
            if not cross or any(g for j, g in enumerate(grads_in) if j != i):
                b = base[inputs[i]]
                if rules[b].allocates:  # a parameter's view costs nothing
                    act_saved[b] = per_el * size[b]
        if r.saved_output:
            b = base[name]
            if rules[b].allocates:
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
