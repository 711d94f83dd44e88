"""The ``cls`` search space: layer-wise classification stacks with skip anchors,
in the spirit of Zoph & Le, "Neural Architecture Search with Reinforcement
Learning", ICLR 2017 (arXiv:1611.01578), §3.1 and §3.3.

A network is ``num_layers`` conv-BN-ReLU layers, global average pooling and a
linear classifier. Layer ``i`` (0-based) reads the output of layer ``i - 1``
(the image for layer 0) concatenated along channels with the outputs of the
earlier layers its anchor selects, then applies a ``filter_height x
filter_width`` conv (no bias, "same" padding ``(kh // 2, kw // 2)``) with
``filters`` outputs and stride 1 or 2, BN and ReLU.

Decisions, in suggestion order (so an autoregressive controller sees one
sequence, layer after layer; all categorical):

==============================  ======================  ==================================
name                            choices                 note
==============================  ======================  ==================================
``num_layers``                  6, 7, ..., 12
``layer{i}.skip.{j}``           False, True             for every ``j < i - 1``: the anchor
``layer{i}.filter_height``      1, 3, 5, 7
``layer{i}.filter_width``       1, 3, 5, 7
``layer{i}.filters``            24, 36, 48, 64
``layer{i}.stride``             1, 2                    2 is applied while the budget lasts
==============================  ======================  ==================================

A trial with ``N`` layers has ``1 + 4 N + (N - 1)(N - 2) / 2`` distinct
parameters (:func:`num_params_of`): 35 for 6 layers, 104 for 12.

Where this departs from Zoph & Le, and why:

* **Anchors.** Zoph & Le's anchor of layer ``i`` chooses among *all* earlier
  layers (a sigmoid per pair), an unconnected layer reads the image, and the
  outputs nobody reads are concatenated before the classifier. Here the
  previous layer is always an input (a chain, so no layer is dead and the
  depth is the depth sampled) and ``layer{i}.skip.{j}`` (one boolean per layer
  ``j < i - 1``, the anchor's sigmoid) adds extra inputs; the classifier reads
  the last layer.
* **Sizes.** Zoph & Le pad the smaller inputs with zeros to the largest size.
  Here the layer works at its main input's size and a larger skip input is
  max-pooled down to it (kernel = stride = the size ratio, a power of 2,
  ``ceil_mode`` so that ``ceil``-halved sizes match): parameter-free, and it
  keeps the spatial size of the chain decreasing.
* **Strides.** At most ``max_reductions`` layers halve the size (default: as
  many as keep it >= 4, i.e. 3 at 32 x 32); a ``stride`` of 2 asked for after
  the budget is spent is applied as 1 (recorded in the graph's
  ``meta["strides"]``), so the size never collapses and each layer keeps the
  same four decisions.

Inputs: :func:`make_cls_space` takes ``num_classes``, ``input_shape`` and
``max_reductions``; the registered ``cls`` space is 10 classes at 3 x 32 x 32
(CIFAR-10).

Reward: ``cls`` is registered with ``task="cls"``: ``archlab search`` trains
every candidate briefly on ``--data`` (default: the embedded ``shapes`` at
32 x 32) and its validation top-1 is the reward (:mod:`archlab.search.trained`);
the space is built again at the data's size and class count (``factory``).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from archlab.errors import ArchlabError
from archlab.graph import Graph
from archlab.lang import GraphBuilder, Ref
from archlab.zoo.common import conv_bn
from search_spaces import register_space

ZOPH2017 = "Zoph & Le, Neural Architecture Search with Reinforcement Learning, ICLR 2017 (arXiv:1611.01578)"

NUM_LAYERS = tuple(range(6, 13))
FILTER_SIZES = (1, 3, 5, 7)
NUM_FILTERS = (24, 36, 48, 64)
STRIDES = (1, 2)
MIN_SIZE = 4  # smallest feature map the stride budget allows by default

CLS_INPUT_SHAPE = (3, 32, 32)
CLS_NUM_CLASSES = 10


def num_params_of(num_layers: int) -> int:
    """Distinct Optuna parameters of a trial with ``num_layers`` layers:
    ``num_layers`` + 4 per layer + one skip boolean per pair ``j < i - 1``."""
    n = num_layers
    return 1 + 4 * n + (n - 1) * (n - 2) // 2


def default_reductions(input_shape: Sequence[int], min_size: int = MIN_SIZE) -> int:
    """How many halvings keep both sides of ``input_shape`` >= ``min_size`` (at least 0)."""
    side, k = min(input_shape[1:]), 0
    while (side + 1) // 2 >= min_size:
        side, k = (side + 1) // 2, k + 1
    return k


def _resize(b: GraphBuilder, x: Ref, like: Ref, name: str) -> Ref:
    """``x`` max-pooled to ``like``'s spatial size. Sizes along the chain are
    ceil-halved, and ``ceil(ceil(n / 2) / 2) = ceil(n / 4)``, so one pool with
    kernel = stride = the smallest power of 2 that fits, in ``ceil_mode``, hits it."""
    ratio = 1
    while -(-x.shape[1] // ratio) > like.shape[1]:
        ratio *= 2
    if ratio == 1:
        return x
    return b.max_pool2d(x, ratio, stride=ratio, ceil_mode=True, name=name)


def cls_graph(layers: Sequence[dict[str, Any]], *, num_classes: int = CLS_NUM_CLASSES,
              input_shape: tuple[int, int, int] = CLS_INPUT_SHAPE, max_reductions: int | None = None,
              name: str = "cls") -> Graph:
    """The network of a list of layers, each ``{"filter_height", "filter_width",
    "filters", "stride", "skips"}`` (``skips``: indices ``j < i - 1`` of the
    extra inputs). ``max_reductions=None``: :func:`default_reductions`.

    Returns:
        The graph; ``meta["strides"]`` holds the stride each layer applied.
    """
    budget = default_reductions(input_shape) if max_reductions is None else max_reductions
    b = GraphBuilder(name, meta={"family": "cls_space", "paper": ZOPH2017})
    x = b.input(input_shape)
    outs: list[Ref] = []
    strides: list[int] = []
    for i, layer in enumerate(layers):
        with b.scope(f"layer{i}"):
            inputs = [x]
            for j in sorted(layer["skips"]):
                if not 0 <= j < i - 1:
                    raise ArchlabError(f"cls space: layer {i} can take skips from layers 0..{i - 2}, not {j}")
                inputs.append(_resize(b, outs[j], x, name=f"pool{j}"))
            h = b.concat(inputs, name="concat") if len(inputs) > 1 else x
            stride = 2 if layer["stride"] == 2 and budget > 0 else 1
            budget -= stride == 2
            kh, kw = int(layer["filter_height"]), int(layer["filter_width"])
            x = conv_bn(b, h, int(layer["filters"]), (kh, kw), stride=stride, padding=(kh // 2, kw // 2))
        outs.append(x)
        strides.append(stride)
    b.graph.meta["strides"] = strides
    x = b.flatten(b.adaptive_avg_pool2d(x, 1, name="avgpool"))
    b.output(b.linear(x, num_classes, name="fc"))
    return b.build()


def sample_layers(trial: Any) -> list[dict[str, Any]]:
    """The decisions of one trial, suggested in the documented order."""
    n = trial.suggest_categorical("num_layers", NUM_LAYERS)
    layers = []
    for i in range(n):
        p = f"layer{i}."
        skips = [j for j in range(i - 1) if trial.suggest_categorical(f"{p}skip.{j}", (False, True))]
        layers.append({
            "skips": skips,
            "filter_height": trial.suggest_categorical(p + "filter_height", FILTER_SIZES),
            "filter_width": trial.suggest_categorical(p + "filter_width", FILTER_SIZES),
            "filters": trial.suggest_categorical(p + "filters", NUM_FILTERS),
            "stride": trial.suggest_categorical(p + "stride", STRIDES),
        })
    return layers


def make_cls_space(*, num_classes: int = CLS_NUM_CLASSES, input_shape: tuple[int, int, int] = CLS_INPUT_SHAPE,
                   max_reductions: int | None = None) -> Callable[[Any], Graph]:
    """A ``cls`` space function for ``num_classes`` classes at ``input_shape``.

    Args:
        max_reductions: most stride-2 layers; ``None``: as many as keep the map >= 4 x 4.

    Raises:
        ArchlabError: a non-positive class count, a bad shape or a negative budget.
    """
    shape = tuple(int(s) for s in input_shape)
    if num_classes <= 0 or len(shape) != 3 or min(shape) <= 0 or (max_reductions is not None and max_reductions < 0):
        raise ArchlabError(f"cls space needs num_classes > 0, a (C, H, W) input and max_reductions >= 0; got "
                           f"num_classes={num_classes}, input_shape={input_shape}, max_reductions={max_reductions}")

    def space(trial: Any) -> Graph:
        """One layer-wise classification stack (see :mod:`search_spaces.cls`)."""
        return cls_graph(sample_layers(trial), num_classes=num_classes, input_shape=shape,  # type: ignore[arg-type]
                         max_reductions=max_reductions)

    return space


cls_space = make_cls_space()
register_space("cls", description="Zoph & Le layer-wise conv stacks with skip anchors; "
               "reward: validation top-1 after brief training", task="cls", factory=make_cls_space)(cls_space)

__all__ = ["make_cls_space", "cls_graph", "sample_layers", "cls_space", "num_params_of", "default_reductions"]
