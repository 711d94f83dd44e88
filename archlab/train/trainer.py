"""Train an archlab graph on resident data: :func:`train`.

The loop (see :class:`~archlab.train.config.TrainConfig` for every knob):
compile the graph with ``to_module``, initialise it (:mod:`archlab.train.init`), move
both splits to the device once as uint8, and per step gather a batch, normalise
and augment it on the device, forward (bf16 autocast and channels_last on
CUDA), cross-entropy with the ignore index (auxiliary heads weighted), step the
optimizer and the warm-up + cosine schedule. Nothing syncs with the host
between checks: losses stay on the device and are checked for NaN/inf every
``check_every`` steps. After every epoch the validation split is evaluated
(:mod:`archlab.train.evaluate`) and the ``callback`` sees the epoch's record.

Faults are named and leave nothing behind: a non-finite loss raises
:class:`NonFiniteLossError` with the step; CUDA out-of-memory raises
:class:`TrainOutOfMemoryError` with the batch size and archlab's predicted
training memory; in both cases the model, optimizer and batches are released
(and the CUDA cache emptied) before the error leaves :func:`train`, so the next
training in the same process starts clean.
"""
from __future__ import annotations

import contextlib
import gc
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from archlab.errors import ArchlabError, fmt_shape
from archlab.train.augment import Normalizer, augment_classification, augment_segmentation
from archlab.train.config import TrainConfig
from archlab.train.data.base import TaskData
from archlab.train.evaluate import evaluate, main_key
from archlab.train.init import initialise, uses_torchvision_init


class TrainError(ArchlabError):
    """Training cannot start or could not go on (names the cause and the fix)."""


class NonFiniteLossError(TrainError):
    """The loss became NaN or infinite (``.step`` is the first such step, 1-based)."""


class TrainOutOfMemoryError(TrainError):
    """The device ran out of memory (names the batch size and the predicted need)."""


class TrainTimeoutError(TrainError):
    """Training ran past its ``deadline`` (names the epoch and step it reached)."""


@dataclass
class EpochRecord:
    """What one epoch did; the callback receives it and :class:`TrainResult` keeps them all."""

    epoch: int                # 1-based
    step: int                 # optimizer steps done so far
    loss: float               # mean training loss of this epoch's steps
    lr: float                 # learning rate at the epoch's last step
    val: dict[str, float]     # validation metrics after the epoch (see evaluate())
    train_s: float            # training seconds so far (evaluation excluded)
    images_per_s: float       # training throughput of this epoch

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TrainResult:
    """The outcome of :func:`train`. ``module`` holds the trained weights."""

    model: str
    data: str
    task: str
    device: str
    config: dict[str, Any]
    epochs: int
    steps: int
    images_per_s: float
    train_s: float
    eval_s: float
    history: list[EpochRecord]
    final: dict[str, float]
    stopped_early: bool = False
    peak_memory_bytes: Optional[int] = None  # CUDA's max_memory_allocated during training; None on the CPU
    module: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: everything but the module."""
        d = {k: v for k, v in self.__dict__.items() if k != "module"}
        d["history"] = [h.to_dict() for h in self.history]
        return d


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available else ``cpu``; checks that a CUDA device exists."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise TrainError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:K") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(f"device {name!r} asked for, but this machine has no CUDA GPU "
                             f"(torch {torch.__version__}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TrainError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type != "cpu":
        raise TrainError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:K")
    return dev


def check_fit(graph, data: TaskData) -> tuple[str, list[str]]:
    """The main output's name and the auxiliary outputs' names, after checking
    that ``graph`` takes ``data``'s images and predicts its classes.

    Raises:
        TrainError: one input expected; input shape, task or class count differ.
    """
    inputs = graph.input_nodes
    if len(inputs) != 1:
        raise TrainError(f"model {graph.name} has {len(inputs)} inputs; training needs exactly one image input")
    shape = tuple(inputs[0].attrs["shape"])
    if shape != data.input_shape:
        raise TrainError(f"model {graph.name} takes {fmt_shape(shape)} but data {data.spec} has images "
                         f"{fmt_shape(data.input_shape)}; pass --input {fmt_shape(data.input_shape)} (zoo models) "
                         "or load the data at the model's size")
    main = main_key(graph.outputs)
    aux = [k for k in graph.outputs if k != main and k.startswith("aux")]
    for key in [main, *aux]:
        out = tuple(graph[graph.outputs[key]].shape)
        want = (data.num_classes, *data.input_shape[1:]) if data.task == "seg" else (data.num_classes,)
        if out != want:
            kind = "per-pixel classes" if data.task == "seg" else "one class per image"
            raise TrainError(f"output '{key}' of model {graph.name} is {fmt_shape(out)}, but data {data.spec} "
                             f"needs {fmt_shape(want)} ({kind}, {data.num_classes} classes); "
                             f"pass --num-classes {data.num_classes} or a model with that output")
    return main, aux


def step_plan(n: int, batch_size: int, epochs: int, steps: Optional[int]) -> tuple[int, int, int, int]:
    """``(batch, steps per epoch, total steps, epochs)`` of training on ``n`` images: the last
    partial batch of an epoch is dropped (batch norm wants full ones); ``steps`` rounds up to epochs."""
    batch = min(batch_size, n)
    per_epoch = max(1, n // batch)
    total = steps if steps is not None else epochs * per_epoch
    return batch, per_epoch, total, math.ceil(total / per_epoch)


def _schedule(total: int, warmup: float) -> Callable[[int], float]:
    """Linear warm-up over ``warmup * total`` steps, then cosine to 0."""
    w = int(round(warmup * total))

    def factor(step: int) -> float:
        if step < w:
            return (step + 1) / w
        t = (step - w) / max(1, total - w)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return factor


def _optimizer(module, cfg: TrainConfig, device) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.dim() > 1 else no_decay).append(p)  # no decay on norm weights and biases
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = {"fused": True} if device.type == "cuda" else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True, **fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, **fused)


def _loss_fn(cfg: TrainConfig, data: TaskData, main: str, aux: list[str]):
    ignore = data.ignore_index if data.ignore_index is not None else -100

    def one(logits, y):
        logits = logits.float()
        if cfg.loss == "ce" or data.task == "cls":
            return F.cross_entropy(logits, y, ignore_index=ignore)
        from archlab.metrics import soft_iou_loss

        siou = soft_iou_loss(logits, y, ignore_index=data.ignore_index)
        return siou if cfg.loss == "soft_iou" else F.cross_entropy(logits, y, ignore_index=ignore) + siou

    def loss(out, y):
        if not isinstance(out, dict):
            return one(out, y)
        total = one(out[main], y)
        for k in aux:
            total = total + cfg.aux_weight * one(out[k], y)
        return total
    return loss


def train(graph, data: TaskData, config: TrainConfig | None = None, *,
          callback: Callable[[EpochRecord], Optional[bool]] | None = None,
          progress: bool | None = None, deadline: float | None = None) -> TrainResult:
    """Train ``graph`` on ``data`` and evaluate it on the validation split after every epoch.

    Args:
        graph: an archlab ``Graph`` whose input is ``data``'s image shape and
            whose (main) output has ``data.num_classes`` channels (per pixel for
            segmentation). Outputs named ``aux*`` are auxiliary heads.
        data: a loaded :class:`~archlab.train.data.TaskData`.
        config: the knobs (:class:`TrainConfig`); ``None`` for the defaults.
        callback: called with each :class:`EpochRecord` after its evaluation;
            returning ``True`` stops training (``stopped_early``), and an
            exception it raises (e.g. ``optuna.TrialPruned``) propagates after
            memory is freed.
        progress: a tqdm bar on stderr; ``None``: when stderr is a terminal.
        deadline: a ``time.monotonic()`` value; past it, training stops at the
            next loss check (every ``check_every`` steps) or evaluation with
            :class:`TrainTimeoutError` (memory freed as for the other errors).

    Returns:
        A :class:`TrainResult`; ``final`` is the last evaluation.

    Raises:
        TrainError: bad config, a model that does not fit the data, no such device.
        NonFiniteLossError: the loss became NaN/inf (names the step).
        TrainOutOfMemoryError: the device ran out of memory (names the batch size
            and the predicted training memory).
        TrainTimeoutError: ``deadline`` passed.
    """
    cfg = (config or TrainConfig()).resolved()
    device = resolve_device(cfg.device)
    main, aux = check_fit(graph, data)
    if len(data.train) < 2:
        raise TrainError(f"data {data.spec}: the train split has {len(data.train)} image(s); training needs at least 2")
    oom = False
    # Subnormal floats (tiny gradients, BN statistics) run up to 10x slower on x86 CPUs:
    # flush them to zero while training, as GPUs do anyway.
    flush = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        return _train(graph, data, cfg, device, main, aux, callback, progress, deadline)
    except torch.OutOfMemoryError:
        oom = True  # handled below, outside the except block, so its traceback's frames are gone
    finally:
        if flush:
            torch.set_flush_denormal(False)  # PyTorch's default (it has no getter to restore from)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    assert oom
    raise TrainOutOfMemoryError(_oom_message(graph, cfg, device)) from None


def _oom_message(graph, cfg: TrainConfig, device) -> str:
    from archlab.analysis.memory import training_memory
    from archlab.analysis.report import human_bytes

    amp = cfg.amp if cfg.amp is not None else device.type == "cuda"
    need = training_memory(graph, batch=cfg.batch_size, dtype="bfloat16" if amp else "float32",
                           optimizer="adam" if cfg.optimizer == "adamw" else "sgd_momentum").total
    have = ""
    if device.type == "cuda":
        have = f"; the GPU has {human_bytes(torch.cuda.get_device_properties(device).total_memory)}"
    return (f"out of memory on {device} training {graph.name} at batch size {cfg.batch_size}: archlab predicts "
            f"{human_bytes(need)} of training memory{have}; lower --batch-size (e.g. {max(2, cfg.batch_size // 2)}) "
            "or the input size")


def _train(graph, data, cfg, device, main, aux, callback, progress, deadline) -> TrainResult:
    from archlab.torchio.compile import to_module

    cuda = device.type == "cuda"
    amp = cfg.amp if cfg.amp is not None else cuda
    channels_last = cfg.channels_last if cfg.channels_last is not None else cuda
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if cuda:
        torch.backends.cudnn.benchmark = not cfg.deterministic
        torch.backends.cudnn.deterministic = cfg.deterministic
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    init_used = "torchvision" if uses_torchvision_init(graph, cfg.init) else "pytorch"
    module = initialise(to_module(graph), graph, init_used).to(device=device, memory_format=fmt).train()
    model = torch.compile(module) if cfg.compile else module
    opt = _optimizer(module, cfg, device)
    n = len(data.train)
    batch, per_epoch, total, epochs = step_plan(n, cfg.batch_size, cfg.epochs, cfg.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(max(total, int(round(total * cfg.horizon))), cfg.warmup))
    loss_fn = _loss_fn(cfg, data, main, aux)
    normalize = Normalizer(data.mean, data.std, device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else None
    x_all = data.train.images.to(device, non_blocking=True)
    y_all = data.train.targets.to(device, non_blocking=True)
    shift = max(1, round(data.input_shape[-1] / 8))  # CIFAR's 4 px at 32
    scale = tuple(cfg.scale) if cfg.scale is not None else tuple(data.aug_scale)

    history: list[EpochRecord] = []
    bar = _bar(total, progress)
    step, train_s, eval_s, stopped = 0, 0.0, 0.0, False
    final: dict[str, float] = {}
    try:
        for epoch in range(1, epochs + 1):
            steps_now = min(per_epoch, total - step)
            losses = torch.zeros(steps_now, device=device)
            perm = torch.randperm(n, generator=gen, device=device)
            _sync(device)
            t0 = time.perf_counter()
            for i in range(steps_now):
                idx = perm[i * batch:(i + 1) * batch]
                x = normalize(x_all[idx])
                y = y_all[idx]
                if data.task == "seg":
                    x, y = (augment_segmentation(x, y, scale=scale, ignore_index=data.ignore_index,
                                                 generator=gen) if cfg.augment else (x, y.long()))
                elif cfg.augment:
                    x = augment_classification(x, max_shift_px=shift, generator=gen)
                x = x.contiguous(memory_format=fmt)
                with autocast() if autocast else contextlib.nullcontext():
                    out = model(x)
                loss = loss_fn(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses[i] = loss.detach()
                step += 1
                if (i + 1) % cfg.check_every == 0 or i + 1 == steps_now:
                    _check_finite(losses, i + 1, step - (i + 1), epoch, sched, cfg.optimizer)
                    _check_deadline(deadline, epoch, step)
                    bar.update(cfg.check_every if (i + 1) % cfg.check_every == 0 else (i + 1) % cfg.check_every)
                    bar.set_postfix_str(_postfix(epoch, epochs, losses[:i + 1], batch * (i + 1),
                                                 time.perf_counter() - t0, history), refresh=False)
            _sync(device)
            dt = time.perf_counter() - t0
            train_s += dt
            t1 = time.perf_counter()
            val = evaluate(model, data.val, task=data.task, num_classes=data.num_classes,
                           ignore_index=data.ignore_index, normalize=normalize, batch_size=cfg.eval_batch_size,
                           device=device, autocast=autocast, channels_last=channels_last)
            eval_s += time.perf_counter() - t1
            if epoch < epochs:  # a run that finished is not failed for its last evaluation
                _check_deadline(deadline, epoch, step)
            rec = EpochRecord(epoch, step, float(losses.mean()), sched.get_last_lr()[0], val, train_s,
                              batch * steps_now / dt if dt > 0 else math.inf)
            history.append(rec)
            final = val
            bar.set_postfix_str(_postfix(epoch, epochs, losses, batch * steps_now, dt, history))
            if callback is not None and callback(rec):
                stopped = True
                break
    finally:
        bar.close()
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    module.eval()
    return TrainResult(
        model=graph.name, data=data.spec, task=data.task, device=str(device),
        config={**cfg.to_dict(), "scale": scale, "init": init_used},  # what was applied, not "auto"/None
        epochs=len(history), steps=step, images_per_s=batch * step / train_s if train_s > 0 else math.inf,
        train_s=train_s, eval_s=eval_s, history=history, final=final, stopped_early=stopped,
        peak_memory_bytes=peak, module=module.cpu() if cuda else module)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_finite(losses: torch.Tensor, upto: int, first_step: int, epoch: int, sched, optimizer: str) -> None:
    bad = ~torch.isfinite(losses[:upto])
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        err = NonFiniteLossError(
            f"the loss became {float(losses[i])} at step {first_step + i + 1} (epoch {epoch}); the model diverged: "
            f"lower --lr (now {sched.base_lrs[0]:g})" + (" or try --optimizer sgd" if optimizer != "sgd" else ""))
        err.step = first_step + i + 1
        raise err


def _check_deadline(deadline: float | None, epoch: int, step: int) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise TrainTimeoutError(f"training ran past its time limit at epoch {epoch}, step {step}")


def _bar(total: int, progress: bool | None):
    from tqdm.auto import tqdm

    enabled = sys.stderr.isatty() if progress is None else progress
    return tqdm(total=total, unit="step", disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5, leave=False)


def _postfix(epoch: int, epochs: int, losses: torch.Tensor, images: int, seconds: float,
             history: list[EpochRecord]) -> str:
    parts = [f"epoch {epoch}/{epochs}", f"loss {float(losses.mean()):.3f}",
             f"{images / seconds:.0f} img/s" if seconds > 0 else ""]
    if history:
        parts.append(" ".join(f"{k} {v:.3f}" for k, v in history[-1].val.items()))
    return ", ".join(p for p in parts if p)
