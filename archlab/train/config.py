"""The trainer's knobs, in one dataclass with a reason per field."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

from archlab.errors import ArchlabError

OPTIMIZERS = ("adamw", "sgd")
LOSSES = ("ce", "soft_iou", "ce+soft_iou")
INITS = ("auto", "torchvision", "pytorch")  # see archlab.train.init
DEFAULT_LR = {"adamw": 3e-3, "sgd": 0.05}          # brief from-scratch training of small nets, batch 32
DEFAULT_WEIGHT_DECAY = {"adamw": 5e-4, "sgd": 1e-4}  # sgd: torchvision's references; adamw: decoupled, a little more


@dataclass
class TrainConfig:
    """How :func:`archlab.train.train` trains. The defaults make a quick run:
    a ``seg``-space-sized net on the embedded task in under a minute on a 2-core
    CPU (README, "Training"); a converged result wants more epochs and data."""

    epochs: int = 4                       # passes over the train split (ignored when ``steps`` is set); 4: a quick run
    steps: Optional[int] = None           # total optimizer steps instead of epochs; the last epoch may be partial
    batch_size: int = 32                  # images per step; >= 2 (batch norm on pooled 1x1 maps needs two)
    lr: Optional[float] = None            # peak learning rate; None: DEFAULT_LR of the optimizer
    optimizer: str = "adamw"              # "adamw" (robust from scratch) or "sgd" (Nesterov momentum 0.9, torchvision's recipe)
    weight_decay: Optional[float] = None  # None: DEFAULT_WEIGHT_DECAY of the optimizer; never on norm weights or biases
    warmup: float = 0.1                   # fraction of the steps with a linear warm-up, then cosine decay to 0
    horizon: float = 1.0                  # the warm-up + cosine schedule spans horizon x the steps trained: > 1 trains the first part of a longer run (see archlab.search.trained)
    loss: str = "ce"                      # "ce" (cross-entropy, ignore index), "soft_iou" (the lecture's), or their sum
    aux_weight: float = 0.5               # weight of auxiliary heads' losses (outputs named aux*; torchvision's references use 0.5)
    augment: bool = True                  # random scale-crop and flip (segmentation); random translate and flip (classification)
    scale: Optional[tuple[float, float]] = None  # zoom range of the segmentation scale-crop; None: the data's aug_scale
    init: str = "auto"                    # "auto": torchvision's init for torchvision's families, PyTorch's for archlab's own nets; "torchvision"; "pytorch"
    device: str = "auto"                  # "auto" (cuda when there is one), "cpu", "cuda", "cuda:K"
    amp: Optional[bool] = None            # bf16 autocast; None: on for CUDA, off on the CPU (fp32 there)
    channels_last: Optional[bool] = None  # NHWC tensors; None: on for CUDA (tensor cores), off on the CPU
    compile: bool = False                 # torch.compile the model (pays a compile time once; worth it for long runs)
    deterministic: bool = False           # CUDA: deterministic kernels, no cudnn.benchmark (the CPU is deterministic anyway)
    seed: int = 0                         # initialisation, shuffling and augmentation
    eval_batch_size: Optional[int] = None  # None: 2 x batch_size (no gradients kept)
    check_every: int = 25                 # steps between host syncs that check the loss is finite and update the progress bar

    def resolved(self) -> "TrainConfig":
        """A copy with the ``None`` defaults filled in and every field checked.

        Raises:
            ArchlabError: naming the field, the value and what is allowed.
        """
        c = TrainConfig(**asdict(self))
        if c.optimizer not in OPTIMIZERS:
            raise ArchlabError(f"optimizer {c.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if c.init not in INITS:
            raise ArchlabError(f"init {c.init!r} is not one of {', '.join(INITS)}")
        if c.loss not in LOSSES:
            raise ArchlabError(f"loss {c.loss!r} is not one of {', '.join(LOSSES)}")
        c.lr = DEFAULT_LR[c.optimizer] if c.lr is None else c.lr
        c.weight_decay = DEFAULT_WEIGHT_DECAY[c.optimizer] if c.weight_decay is None else c.weight_decay
        c.eval_batch_size = c.eval_batch_size or 2 * c.batch_size
        _check_int("epochs", c.epochs, 1)
        if c.steps is not None:
            _check_int("steps", c.steps, 1)
        _check_int("batch_size", c.batch_size, 2, why="batch norm needs two images per step")
        _check_int("eval_batch_size", c.eval_batch_size, 1)
        _check_int("check_every", c.check_every, 1)
        _check_int("seed", c.seed, 0, hi=2**63 - 1)
        _check_float("lr", c.lr, lo=0, lo_open=True)
        _check_float("weight_decay", c.weight_decay, lo=0)
        _check_float("warmup", c.warmup, lo=0, hi=1)
        _check_float("horizon", c.horizon, lo=1)
        _check_float("aux_weight", c.aux_weight, lo=0)
        if c.scale is not None:
            if not isinstance(c.scale, (tuple, list)) or len(c.scale) != 2:
                raise ArchlabError(f"scale range {c.scale!r} must be (low, high) with 0 < low <= high")
            c.scale = tuple(c.scale)
            for end in c.scale:
                _check_float("scale", end, lo=0, lo_open=True)
            if c.scale[1] < c.scale[0]:
                raise ArchlabError(f"scale range {c.scale} must be (low, high) with 0 < low <= high")
        return c

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain values (for JSON and study records)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _check_int(name: str, value: Any, lo: int, *, hi: int | None = None, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ArchlabError(f"{name} must be an integer {rng}, got {value!r}" + (f" ({why})" if why else ""))


def _check_float(name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (lo is None or (value > lo if lo_open else value >= lo)) and (hi is None or value <= hi)
    if not ok:
        rng = " and ".join(s for s in ((f"> {lo}" if lo_open else f">= {lo}") if lo is not None else "",
                                       f"<= {hi}" if hi is not None else "") if s)
        raise ArchlabError(f"{name} must be a finite number {rng}, got {value!r}")
