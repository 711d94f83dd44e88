"""Rewards from brief training: the evaluator of spaces whose candidates must be
trained (``seg``, ``cls``, and a user's space file that sets ``TASK``).

Every candidate of a study is trained the same way -- the :class:`TrainBudget`:
data, input size, steps, batch size, learning rate, seed, pruner and penalty --
and the budget is stored on the study (user attr ``training``), so a worker
that joins with another one is refused before it writes anything
(:func:`check_same_training`). The reward is the validation metric after the
budget (mIoU for segmentation, top-1 for classification), times the
hardware penalty when one is asked for (MnasNet's ``ACC * (value / target) ** w``).

Per trial (see :class:`TrainedEvaluator`):

* after every epoch the reward so far (the validation metric, times the
  penalty when there is one) is reported to the trial (its intermediate
  values: the learning curve, which ``optuna-dashboard`` and the reports
  draw), and the study's pruner may stop it (``optuna.TrialPruned``;
  the engine records the trial as PRUNED with the epoch in ``stopped_epoch``);
* a diverging loss, running out of memory or passing ``trial_timeout`` raise
  :class:`~archlab.errors.TrialFailed`: the trial is FAIL with the reason in
  ``fail_reason``, the memory is freed and the search goes on;
* user attrs ``accuracy`` (the metric before the penalty), ``penalty`` (the
  factor), ``epochs`` (trained), ``train_s``, ``images_per_s``, ``device`` and,
  with ``save_weights``, ``weights`` (the path of its ``state_dict``; only the
  best ``keep`` trials' files are kept).

Imports torch (the engine imports this module only for spaces that train).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Optional

from archlab.errors import ArchlabError, TrialFailed, UserCodeError

TASKS = {"seg": ("scenes", "miou"), "cls": ("shapes", "top1")}
"""task -> (default data spec, reward metric)."""

DEFAULT_INPUT = (3, 32, 32)
"""The default input of a search: 32 x 32 keeps a CPU trial to tens of seconds (README, "Search")."""

PRUNERS = ("none", "median", "halving", "hyperband")
FIRST_RUNG = 2  # the first epoch a pruner may stop a trial after (see make_pruner)
PENALTY_METRICS = ("params", "macs", "memory")
DEFAULT_PENALTY_WEIGHT = -0.07  # MnasNet (Tan et al. 2019, §3): alpha = beta = -0.07, a soft constraint

# Budget fields that do not change a reward, so workers may differ in them.
_PER_WORKER = ("device", "trial_timeout", "save_weights", "keep")
# What a study made before archlab stored a setting was trained with: it reads as
# this, not as today's default, so changing a default never lets a worker with the
# new one join an old study (``horizon`` was added on 2026-11-27 with 1.0).
BEFORE_STORED = {"horizon": 1.0}
# How the CLI spells each recorded field (for the refusal's fix).
FLAGS = {"data": "--data", "input": "--input", "epochs": "--epochs", "steps": "--steps",
         "batch_size": "--batch-size", "lr": "--lr", "seed": "--train-seed", "pruner": "--pruner", "horizon": "--horizon",
         "penalty": "--penalty"}


@dataclass
class TrainBudget:
    """How every candidate of a study is trained (``archlab search``'s training options).

    The fields not in ``_PER_WORKER`` are stored on the study and must be equal
    for every worker; the others are this worker's own.
    """

    data: Optional[str] = None        # data spec; None: the task's embedded set (scenes / shapes)
    input: Optional[tuple[int, int, int]] = None  # (C, H, W) of data and candidates; None: DEFAULT_INPUT
    epochs: int = 4                   # passes over the train split; 4 x 32 steps: ~10-40 s a CPU trial
    steps: Optional[int] = None       # optimizer steps instead of epochs
    batch_size: int = 32              # images per step
    lr: Optional[float] = None        # peak learning rate; None: the trainer's default (AdamW 3e-3)
    seed: int = 0                     # initialisation, shuffling and data: equal for every trial, so rewards compare
    horizon: float = 1.0              # the LR schedule spans horizon x the budget: 10 = the first tenth of a 10x run (README, "What a brief reward is worth")
    pruner: str = "none"              # none | median | halving | hyperband (Optuna's pruners, by epoch)
    penalty: Optional[dict] = None    # {"metric", "target", "weight"}: reward = acc * (value / target) ** weight
    device: str = "auto"              # auto | cpu | cuda | cuda:K (this worker's)
    trial_timeout: Optional[float] = None  # seconds a trial may train before it FAILs (this worker's)
    save_weights: Optional[str] = None     # folder for the best trials' state_dicts (this worker's)
    keep: int = 3                     # how many trials' weights stay in save_weights

    def record(self) -> dict[str, Any]:
        """The fields every worker of a study must agree on (JSON-ready)."""
        d = {k: v for k, v in asdict(self).items() if k not in _PER_WORKER}
        d["input"] = list(d["input"]) if d["input"] is not None else None
        return d


def parse_penalty(text: str) -> dict:
    """``macs:300M`` or ``params:1e6:-0.1`` -> ``{"metric", "target", "weight"}``.

    Raises:
        ArchlabError: unknown metric, a target that is not a positive count, a non-finite weight.
    """
    parts = [p.strip() for p in str(text).split(":")]
    if len(parts) not in (2, 3) or parts[0].lower() not in PENALTY_METRICS:
        raise ArchlabError(f"--penalty {text!r}: write METRIC:TARGET[:W] with METRIC one of "
                           f"{', '.join(PENALTY_METRICS)} (e.g. macs:50M or params:1e6:-0.07)")
    from archlab.search.constraints import parse_count

    try:
        target = parse_count(parts[1])
    except ValueError:
        target = None
    if target is None or target <= 0:
        raise ArchlabError(f"--penalty {text!r}: the target {parts[1]!r} must be a positive count (e.g. 50M, 2e6)")
    weight = DEFAULT_PENALTY_WEIGHT
    if len(parts) == 3:
        try:
            weight = float(parts[2])
        except ValueError:
            weight = math.nan
        if not math.isfinite(weight):
            raise ArchlabError(f"--penalty {text!r}: the weight {parts[2]!r} must be a finite number (e.g. -0.07)")
    return {"metric": parts[0].lower(), "target": target, "weight": weight}


def make_pruner(name: str, epochs: int):
    """Optuna's pruner for ``--pruner`` over a budget of ``epochs`` reported steps.

    None of them prunes after the first epoch: on the H100 run of
    ``benchmarks/proxy_fidelity.py`` the first epoch's mIoU of the default
    budget ranked 20 candidates *against* their 10x-budget mIoU (Kendall tau
    -0.39; 0.73 after the second epoch), and successive halving from epoch 1
    cost the searches of ``benchmarks/search_trained.py`` 0.06 mIoU.
    """
    import optuna

    key = (name or "none").strip().lower()
    if key == "none":
        return optuna.pruners.NopPruner()
    if key == "median":  # stop a trial below the median of earlier trials at the same epoch
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=FIRST_RUNG)  # prunes at step >= this
    if key == "halving":  # asynchronous successive halving: rungs at epochs 2, 6, 18, ...
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=FIRST_RUNG, reduction_factor=3)
    if key == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=FIRST_RUNG, max_resource=max(FIRST_RUNG, epochs),
                                              reduction_factor=3)
    raise ArchlabError(f"unknown pruner {name!r}; choose from {', '.join(PRUNERS)}")


def check_same_training(study, budget_record: dict) -> None:
    """Refuse to join ``study`` with a budget other than the one it stored.

    Raises:
        ArchlabError: one line naming the first differing setting, both values and the fix.
    """
    stored = study.user_attrs.get("training")
    for _ in range(50):  # a study another worker is creating right now gets its settings within moments
        if stored is not None:
            break
        time.sleep(0.1)
        stored = study.user_attrs.get("training")
    if stored is None:
        raise ArchlabError(f"study '{study.study_name}' was made without training its candidates; "
                           "pick another --study name")
    from archlab.search.checks import differing_settings

    diffs = differing_settings(stored, budget_record, TrainBudget().record(), BEFORE_STORED)
    if diffs:
        key, have, want = diffs[0]
        raise ArchlabError(f"study '{study.study_name}' trains its candidates with {key}={_show(have)}, but this "
                           f"worker asks {key}={_show(want)}: its rewards would not compare; run it with "
                           f"the study's {FLAGS.get(key, key)} or pick another --study name")


def _show(v: Any) -> str:
    if v is None:
        return "default"
    if isinstance(v, list) and len(v) == 3 and all(isinstance(x, int) for x in v):
        return "x".join(map(str, v))
    if isinstance(v, dict):
        return ":".join(str(x) for x in v.values())
    return str(v)


class TrainedEvaluator:
    """The reward of a candidate: its validation metric after the study's training budget.

    Build it with :meth:`start` (loads the data once per worker); then
    ``evaluator(trial, graph) -> reward``. ``space_fn`` is the space adapted to
    the data (input size and class count); ``on_epoch(trial_number, record,
    epochs)`` is called after every epoch when set (the CLI's progress bar).
    """

    def __init__(self, task: str, budget: TrainBudget, data, space_fn: Callable, epochs: int,
                 report: bool) -> None:
        self.task, self.budget, self.data, self.space_fn = task, budget, data, space_fn
        self.metric = TASKS[task][1]
        self.epochs = epochs  # epochs the budget trains (steps rounded up to whole epochs)
        self.report = report  # single objective: intermediate values (Optuna has none for several)
        self.on_epoch: Optional[Callable[[int, Any, int], None]] = None

    @classmethod
    def start(cls, space, budget: TrainBudget, *, single_objective: bool) -> "TrainedEvaluator":
        """Load the data and adapt ``space`` (a :class:`search_spaces.Space` with a ``task``) to it.

        Raises:
            ArchlabError: bad options, data that cannot be loaded, a space whose
                candidates do not fit the data, a pruner with several objectives.
        """
        from archlab.train.config import TrainConfig
        from archlab.train.data import load_data
        from archlab.train.trainer import resolve_device

        task = space.task
        if task not in TASKS:
            raise ArchlabError(f"search space '{space.name}' sets TASK = {task!r}; use 'seg' or 'cls'")
        budget = replace(budget, data=budget.data or TASKS[task][0],
                         input=tuple(budget.input) if budget.input is not None else None)
        if budget.pruner not in PRUNERS:
            raise ArchlabError(f"unknown pruner {budget.pruner!r}; choose from {', '.join(PRUNERS)}")
        if budget.pruner != "none" and not single_objective:
            raise ArchlabError("--pruner needs a single objective (Optuna reports no intermediate values for "
                               "several); drop --pruner or use --objectives reward")
        if budget.keep < 1:
            raise ArchlabError(f"--keep must be at least 1, got {budget.keep}")
        if budget.trial_timeout is not None and not budget.trial_timeout > 0:
            raise ArchlabError(f"--trial-timeout must be a positive number of seconds, got {budget.trial_timeout}")
        resolved = TrainConfig(**train_kwargs(budget)).resolved()  # bad numbers named before any data is made
        budget = replace(budget, lr=resolved.lr)  # recorded as the value, so --lr 3e-3 matches the default
        if budget.save_weights:
            _writable_folder(budget.save_weights)
        resolve_device(budget.device)
        if space.factory is not None:
            shape = budget.input or DEFAULT_INPUT
            budget = replace(budget, input=shape)
            data = load_data(budget.data, size=tuple(shape[1:]), seed=budget.seed)
            if data.input_shape[0] != shape[0]:
                raise ArchlabError(f"data {budget.data} has {data.input_shape[0]}-channel images, not {shape[0]}; "
                                   f"pass --input {data.input_shape[0]}x{shape[1]}x{shape[2]}")
            try:
                space_fn = space.factory(num_classes=data.num_classes, input_shape=data.input_shape)
            except ArchlabError:
                raise
            except Exception as e:
                raise UserCodeError(f"make_space of search space '{space.name}' raised {type(e).__name__}: {e}") from e
        else:  # a user's file without make_space: the data comes at the size its graphs take
            shape = _probe_shape(space)
            if budget.input is not None and tuple(budget.input) != shape:
                raise ArchlabError(f"search space '{space.name}' builds {'x'.join(map(str, shape))} inputs, not "
                                   f"--input {'x'.join(map(str, budget.input))}; define make_space(*, num_classes, "
                                   "input_shape) in it to take the size from the data")
            budget = replace(budget, input=shape)
            data = load_data(budget.data, size=tuple(shape[1:]), seed=budget.seed)
            space_fn = space.fn
        if data.task != task:
            raise ArchlabError(f"search space '{space.name}' is a {task} space but data {budget.data} is a "
                               f"{data.task} task; pass --data {TASKS[task][0]} or a {task} data set")
        from archlab.train.trainer import step_plan

        epochs = step_plan(len(data.train), budget.batch_size, budget.epochs, budget.steps)[3]
        return cls(task, budget, data, space_fn, epochs, single_objective)

    def record(self) -> dict[str, Any]:
        """What the study stores (user attr ``training``) and every worker must match."""
        d = self.budget.record()
        d.update(task=self.task, metric=self.metric, num_classes=self.data.num_classes,
                 train_images=len(self.data.train), val_images=len(self.data.val))
        return d

    # ---------------------------------------------------------------- a trial
    def __call__(self, trial, graph) -> float:
        import optuna

        from archlab.train.config import TrainConfig
        from archlab.train.trainer import NonFiniteLossError, TrainOutOfMemoryError, TrainTimeoutError, train

        factor = self._penalty(trial)
        trial.set_user_attr("penalty", factor)

        def after_epoch(rec) -> None:
            value = float(rec.val[self.metric]) * factor
            if not math.isfinite(value):
                value = 0.0  # a NaN metric cannot happen (confusion counts); keep the pruner safe anyway
            if self.report:
                trial.report(value, rec.epoch)
            if self.on_epoch is not None:
                self.on_epoch(trial.number, rec, self.epochs)
            if self.report and rec.epoch < self.epochs and trial.should_prune():  # after the last: no saving
                trial.set_user_attr("stopped_epoch", rec.epoch)
                raise optuna.TrialPruned(f"pruned by the {self.budget.pruner} pruner after epoch {rec.epoch}/"
                                         f"{self.epochs} ({self.metric} {rec.val[self.metric]:.4f})")

        limit = self.budget.trial_timeout
        deadline = time.monotonic() + limit if limit is not None else None
        config = TrainConfig(**train_kwargs(self.budget))
        try:
            result = train(graph, self.data, config, callback=after_epoch, progress=False, deadline=deadline)
        except NonFiniteLossError as e:
            raise TrialFailed(f"diverged: {e}") from None
        except TrainOutOfMemoryError as e:
            raise TrialFailed(f"{e} (memory freed; the search goes on)") from None
        except TrainTimeoutError as e:
            raise TrialFailed(f"timed out: {e} (--trial-timeout {limit:g} s)") from None
        acc = float(result.final[self.metric])
        for key, value in (("accuracy", acc), ("epochs", result.epochs), ("train_s", result.train_s),
                           ("images_per_s", result.images_per_s), ("device", result.device)):
            trial.set_user_attr(key, value)
        if self.budget.save_weights:
            self._keep_weights(trial, acc * factor, result.module)
        return acc * factor

    def _penalty(self, trial) -> float:
        p = self.budget.penalty
        if not p:
            return 1.0
        value = trial.user_attrs.get(p["metric"])
        if value is None or value <= 0:
            return 1.0
        return float((value / p["target"]) ** p["weight"])

    def _keep_weights(self, trial, reward: float, module) -> None:
        """Save this trial's weights if it is among the best ``keep`` trials that have
        weights, and delete the files of finished trials that fell out of that set."""
        import torch
        from optuna.trial import TrialState

        folder = self.budget.save_weights
        prefix = f"{trial.study.study_name}-trial"
        _writable_folder(folder)
        kept = [(t.user_attrs["reward"], -t.number, t.number) for t in
                trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if "weights" in t.user_attrs and "reward" in t.user_attrs]
        best = sorted(kept + [(reward, -trial.number, trial.number)], reverse=True)[:self.budget.keep]
        numbers = {n for _, _, n in best}
        if trial.number in numbers:
            path = os.path.join(folder, f"{prefix}{trial.number:05d}.pt")
            tmp = f"{path}.tmp{os.getpid()}"
            torch.save(module.state_dict(), tmp)
            os.replace(tmp, path)  # a reader never sees half a file
            trial.set_user_attr("weights", os.path.abspath(path))
        for _, _, number in kept:  # only finished trials' files: a running trial's is its worker's
            if number not in numbers:
                try:
                    os.remove(os.path.join(folder, f"{prefix}{number:05d}.pt"))
                except FileNotFoundError:
                    pass  # removed already (by another worker)


def _writable_folder(folder: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        raise ArchlabError(f"--save-weights {folder!r}: cannot write there ({e.strerror or e}); give a writable "
                           "folder") from None


def train_kwargs(budget: TrainBudget) -> dict[str, Any]:
    return {"epochs": budget.epochs, "steps": budget.steps, "batch_size": budget.batch_size, "lr": budget.lr,
            "seed": budget.seed, "device": budget.device, "horizon": budget.horizon}


def _probe_shape(space) -> tuple[int, int, int]:
    import optuna

    graph = space(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask())
    inputs = graph.input_nodes
    shape = tuple(inputs[0].attrs["shape"]) if len(inputs) == 1 else ()
    if len(shape) != 3:
        raise ArchlabError(f"search space '{space.name}' builds graphs with inputs {[n.attrs.get('shape') for n in inputs]}; "
                           "training needs one (C, H, W) image input")
    return shape  # type: ignore[return-value]


__all__ = ["TrainBudget", "TrainedEvaluator", "TASKS", "PRUNERS", "parse_penalty", "make_pruner",
           "check_same_training", "DEFAULT_INPUT"]
