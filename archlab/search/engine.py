"""The search loop: sample a graph, check limits, evaluate, record, repeat.

One worker runs :func:`run_search`; any number of workers (processes or
machines) running it with the same storage and study name share one study.
Each trial:

1. the sampler proposes decisions as the space asks for them (define-by-run);
2. the analyzers measure the graph; a graph over a limit (or one the builder
   rejects with an :class:`~archlab.errors.ArchlabError`) is PRUNED with the
   reason in the user attr ``pruned_reason``, without evaluation;
3. the space's evaluator returns the reward; the trial is told its values.
   A space that trains its candidates (``seg``, ``cls``: a ``task``) gets a
   :class:`~archlab.search.trained.TrainedEvaluator`: each epoch's validation
   metric is reported to the trial and the study's pruner may stop it (PRUNED,
   ``pruned_reason`` names the epoch); a candidate that diverges, runs out of
   memory or past its time limit raises :class:`~archlab.errors.TrialFailed`
   and its trial is FAIL with the reason in ``fail_reason``.

Trial user attrs (``study.trials_dataframe()`` columns ``user_attrs_<key>``):
``arch`` (description-file text, split over ``arch``, ``arch_1``, ... when longer
than :data:`ARCH_CHUNK`; join with :func:`arch_text`), ``params``, ``macs``
(torchvision convention, batch 1), ``memory`` (peak activation bytes, batch 1,
fp32), ``rf`` (output receptive field), ``reward``, ``eval_s`` (evaluation wall
time), ``overhead_s`` (the engine's own time before the final ``tell``: sampling,
analysis, storage writes), ``worker`` (host:pid) and ``pruned_reason``.

On an RDB storage (SQLite, PostgreSQL, MySQL) the worker goes through
:class:`~archlab.search.worker_storage.WorkerStorage`: a trial is created in one
transaction, its params and attrs are written in one more before the evaluation
(so a retry of a crashed evaluation has them), and the attrs set after it
(``reward``, ``eval_s``, ``overhead_s``) are written together with its values
and end state, so a finished trial always holds all its attrs.

Exactly ``n_trials`` decided trials end up in the study -- COMPLETE, PRUNED,
or FAIL with a ``fail_reason`` (the candidate's own failure, which a retry
would repeat; a trial failed because its worker died is not decided, it is
retried) --
however many workers share it and however often it is resumed: a worker asks
for a trial only while fewer than ``n_trials`` are finished, running or
waiting, and gives back (as FAIL, user attr ``surplus``) a trial that lost that
race to a lower-numbered one. With heartbeats (RDB and journal storages) a
worker whose study is short only because of running trials waits for them, so
a dead worker's trial is failed after the grace period and its retry is run
(:mod:`archlab.search.heartbeat`). A worker whose live trial was failed as stale
meanwhile (a stall longer than the grace period) warns in one line and goes on:
the retry is the study's copy of that trial.

Errors: a failing storage (full disk, corrupt file, lost server) is one
:class:`~archlab.search.storage.StorageFailure` line; an exception from the
user's space or evaluator is a :class:`~archlab.errors.UserCodeError` naming
the space and the exception (``__cause__`` keeps the trace).
"""
from __future__ import annotations

import contextlib
import math
import os
import socket
import time
import warnings
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from archlab.errors import ArchlabError, TrialFailed, UserCodeError
from archlab.graph import Graph
from archlab.search.checks import MULTI_OBJECTIVE_SAMPLERS, OBJECTIVES, sampler_key  # noqa: F401 (re-exported)
from archlab.search.checks import check_objectives as _check_objectives
from archlab.search.checks import check_resume as _check_resume
from archlab.search.checks import is_storage_error as _is_storage_error
from archlab.search.checks import preflight as _preflight
from archlab.search.checks import storage_errors as _storage_errors
from archlab.search.config import Progress, SearchConfig, SearchResult
from archlab.search.constraints import Metrics, measure
from archlab.search.heartbeat import Heartbeat, fail_stale_trials, heartbeat_enabled
from archlab.search.storage import open_storage, storage_failure
from archlab.search.trials import ARCH_CHUNK, arch_text, best_reward, best_trial, decided, live  # noqa: F401 (re-exported)
from archlab.search.worker_storage import worker_storage

STALE_CHECK_S = 1.0
"""At most this often (seconds) a worker looks for stale trials (with heartbeats; the grace period is longer)."""


class Worker:
    """One worker of a study: owns the study handle, the space and the evaluator.

    Build it with :meth:`open` (which validates everything before writing), then
    call :meth:`run`.
    """

    def __init__(self, config: SearchConfig, study: optuna.Study, space, evaluator, objectives) -> None:
        self.config, self.study, self.space, self.evaluator = config, study, space, evaluator
        self.objectives = objectives
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._cache: dict[tuple, tuple[Metrics, str]] = {}

    @classmethod
    def open(cls, config: SearchConfig) -> "Worker":
        """Validate the configuration, then open (create or resume) the study.

        Raises:
            ArchlabError: unknown space or sampler, a space that fails its dry
                run, conflicting options, an unreachable storage, or an existing
                study made for another space or other objectives. Nothing is
                written to the storage in any of these cases.
        """
        import dataclasses

        from archlab.search.samplers import make_sampler
        from search_spaces import get_space

        if config.n_trials <= 0:
            raise ArchlabError(f"--n-trials must be positive, got {config.n_trials}")
        if config.timeout is not None and not config.timeout > 0:  # also NaN
            raise ArchlabError(f"--timeout must be a positive number of seconds, got {config.timeout}")
        if config.seed is not None and not 0 <= config.seed < 2**32:
            raise ArchlabError(f"--seed must be in 0 .. 2**32-1 (4294967295), got {config.seed}")
        objectives = _check_objectives(config.objectives, config.sampler)
        space = get_space(config.space)
        _preflight(space)
        sampler = make_sampler(config.sampler, seed=config.seed, **config.sampler_options)  # before any data loads
        pruner = None
        if space.task is not None:  # train every candidate: the data decides the input and classes
            from archlab.search.trained import TrainBudget, TrainedEvaluator, make_pruner

            evaluator = TrainedEvaluator.start(space, config.training or TrainBudget(),
                                               single_objective=len(objectives) == 1)
            space = dataclasses.replace(space, fn=evaluator.space_fn)
            _preflight(space)  # again, at the data's size
            pruner = make_pruner(evaluator.budget.pruner, evaluator.epochs)
        elif config.training is not None:
            raise ArchlabError(f"search space '{space.name}' computes its rewards without training; the training "
                               "options (--data, --epochs, --pruner, ...) apply to spaces with a task (seg, cls)")
        elif space.evaluator is None:
            raise ArchlabError(f"search space '{space.name}' has no evaluator and no TASK; define `evaluator` "
                               "or set TASK = 'seg' / 'cls' in it to train every candidate for its reward")
        if space.task is None:
            try:
                evaluator = space.evaluator(**config.evaluator_options)
            except ArchlabError:
                raise
            except Exception as e:
                raise UserCodeError(f"the evaluator of search space '{space.name}' failed to start: "
                                    f"{type(e).__name__}: {e}") from e
        try:
            return cls._open_study(config, space, sampler, evaluator, objectives, pruner)
        except _storage_errors() as e:
            raise storage_failure(config.storage or "sqlite:///runs/archlab.db", e) from e

    @classmethod
    def _open_study(cls, config: SearchConfig, space, sampler, evaluator, objectives, pruner) -> "Worker":
        storage = config.storage
        if storage is None or isinstance(storage, str):
            storage = open_storage(storage, heartbeat_interval=config.heartbeat_interval,
                                   grace_period=config.grace_period, max_retry=config.max_retry)
        storage = worker_storage(storage)  # RDB: trial writes batched, study reads cached
        name = config.study or f"{os.path.splitext(os.path.basename(config.space))[0]}-{sampler_key(config.sampler)}"
        directions = [OBJECTIVES[o] for o in objectives]
        training = evaluator.record() if space.task is not None else None
        study = None
        if name not in optuna.get_all_study_names(storage):
            try:
                study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                            directions=directions)
            except optuna.exceptions.DuplicatedStudyError:
                pass  # another worker created it a moment ago: join it as any resuming worker does, checks first
            else:
                study.set_user_attr("space", space.name)
                study.set_user_attr("objectives", list(objectives))
                study.set_user_attr("sampler", sampler_key(config.sampler))
                if training is not None:
                    study.set_user_attr("training", training)
        if study is None:
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
            _check_resume(study, space.name, objectives, None if config.switch_sampler else config.sampler)
            check_sampler = getattr(sampler, "check_study", None)  # e.g. reinforce: its controller's settings
            if check_sampler is not None:
                check_sampler(study)
            if training is not None:
                from archlab.search.trained import check_same_training

                check_same_training(study, training)
        return cls(config, study, space, evaluator, objectives)

    def stuck(self) -> list[FrozenTrial]:
        """The study's RUNNING trials (what keeps an unfinished study from finishing)."""
        return self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))

    # ------------------------------------------------------------------ loop
    def _counts(self) -> tuple[int, int, int]:
        """(decided, live, waiting) trials of the study (live: decided, running or waiting)."""
        trials = [t for t in self.study.get_trials(deepcopy=False) if live(t)]
        finished = sum(decided(t) for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        return finished, len(trials), waiting

    def run(self, progress: Callable[[Progress], None] | None = None) -> SearchResult:
        """Run trials until the study holds ``n_trials`` finished ones or the timeout passes.

        Raises:
            StorageFailure: the storage failed (one line naming it and the cause).
            UserCodeError: the space or the evaluator raised (the trial is FAIL).
        """
        try:
            return self._run(progress)
        except _storage_errors() as e:
            raise storage_failure(self.study._storage, e) from e

    def _run(self, progress: Callable[[Progress], None] | None) -> SearchResult:
        cfg, study = self.config, self.study
        start, ran, overheads = time.perf_counter(), 0, []
        beats = heartbeat_enabled(study._storage)
        checked = -math.inf
        while cfg.timeout is None or time.perf_counter() - start < cfg.timeout:
            if beats and time.monotonic() - checked >= STALE_CHECK_S:
                checked = time.monotonic()
                fail_stale_trials(study)
            with self._pinned():  # until the graph is built, the study is read once
                finished, live, waiting = self._counts()
                if finished >= cfg.n_trials:
                    break
                if live >= cfg.n_trials and not waiting:  # a waiting trial (a retry) is ours to run
                    if not beats:
                        break  # the running trials' workers finish the study
                    time.sleep(0.5)  # a running trial may be stale: wait for it to finish or fail
                    continue
                frozen, overhead = self._one_trial()
            if frozen is None:
                continue
            ran += 1
            overheads.append(overhead)
            if progress is not None:
                progress(Progress(self._counts()[0], cfg.n_trials, best_reward(study), ran / (time.perf_counter() - start), frozen))
        return SearchResult(study, ran, overheads)

    def _pinned(self):
        pinned = getattr(self.study._storage, "pinned", None)
        return pinned() if pinned is not None else contextlib.nullcontext()

    def _unpin(self) -> None:
        unpin = getattr(self.study._storage, "unpin", None)
        if unpin is not None:
            unpin()

    def _flush(self, trial: optuna.Trial) -> None:
        """Make the trial's params and attrs so far durable (one transaction on a
        :class:`~archlab.search.worker_storage.WorkerStorage`; other storages wrote them already)."""
        flush = getattr(self.study._storage, "flush", None)
        if flush is not None:
            flush(trial._trial_id)

    def _one_trial(self) -> tuple[FrozenTrial | None, float]:
        t0 = time.perf_counter()
        trial = None
        try:
            with warnings.catch_warnings():
                # Optuna warns that heartbeats are "supposed to be used with Study.optimize":
                # this loop stamps them itself (heartbeat.Heartbeat).
                warnings.simplefilter("ignore", UserWarning)
                trial = self.study.ask()
            return self._run_trial(trial, t0)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Another worker failed this live trial as stale (this worker stalled for longer than the
            # grace period): the study's retry copy stands for it, this copy's result is not recorded.
            what = "a trial" if trial is None else f"trial {trial.number}"
            warnings.warn(f"{what} was failed as stale by another worker while this worker ran it (no "
                          f"heartbeat within the grace period); its retry copy runs instead", RuntimeWarning,
                          stacklevel=2)
            return None, 0.0

    def _run_trial(self, trial: optuna.Trial, t0: float) -> tuple[FrozenTrial | None, float]:
        study, cfg = self.study, self.config
        # Live trials numbered below this one. Numbers are dense, so a number this
        # worker's view lacks (a trial made since its last read) counts as live.
        gone = sum(t.number < trial.number and not live(t) for t in study.get_trials(deepcopy=False))
        if trial.number - gone >= cfg.n_trials:  # lost the race for the last slot: give it back
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            return None, 0.0
        with Heartbeat(study._storage, trial._trial_id):
            try:
                state, values, eval_s = self._evaluate(trial, t0)
            except BaseException as e:
                if isinstance(e, optuna.exceptions.UpdateFinishedTrialError):
                    raise  # failed as stale meanwhile: see _one_trial
                try:
                    trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:2000])
                    study.tell(trial, state=TrialState.FAIL)
                except optuna.exceptions.UpdateFinishedTrialError:
                    pass  # failed as stale meanwhile: the error below is still the news
                if isinstance(e, ArchlabError):
                    err = type(e)(f"trial {trial.number} failed: {e}")
                    err.__cause__ = e.__cause__ or e
                    raise err from err.__cause__
                raise  # the storage's (see run) or archlab's own
            frozen = study.tell(trial, values, state=state)
        return frozen, time.perf_counter() - t0 - eval_s

    def _evaluate(self, trial: optuna.Trial, t0: float):
        trial.set_user_attr("worker", self.worker_id)
        try:
            graph = self.space(trial)
        except ArchlabError as e:
            if "returned a" in str(e):
                raise
            return self._prune(trial, f"invalid architecture: {' '.join(str(e).split())}"), None, 0.0
        except Exception as e:
            if _is_storage_error(e):
                raise
            raise UserCodeError(f"search space '{self.space.name}' raised {type(e).__name__}: {e}") from e
        finally:
            self._unpin()  # the evaluation may take long: later reads see the study as it is then
        metrics, text = self._describe(trial, graph)
        for k in range(0, max(len(text), 1), ARCH_CHUNK):
            trial.set_user_attr("arch" if k == 0 else f"arch_{k // ARCH_CHUNK}", text[k:k + ARCH_CHUNK])
        for key in ("params", "macs", "memory", "rf"):
            trial.set_user_attr(key, getattr(metrics, key))
        reason = self.config.constraints.violation(metrics)
        if reason is not None:
            trial.set_user_attr("overhead_s", time.perf_counter() - t0)
            return self._prune(trial, reason), None, 0.0
        self._flush(trial)  # params and attrs durable before the evaluation (a retry reuses the params)
        t1 = time.perf_counter()
        try:
            reward = float(self.evaluator(trial, graph))
        except (optuna.TrialPruned, TrialFailed) as e:  # the pruner stopped it, or the candidate failed
            eval_s = time.perf_counter() - t1
            trial.set_user_attr("eval_s", eval_s)
            trial.set_user_attr("overhead_s", time.perf_counter() - t0 - eval_s)
            if isinstance(e, TrialFailed):
                trial.set_user_attr("fail_reason", str(e)[:2000])
                return TrialState.FAIL, None, eval_s
            return self._prune(trial, str(e) or "pruned"), None, eval_s
        except ArchlabError:
            raise
        except Exception as e:
            if _is_storage_error(e):
                raise
            raise UserCodeError(f"the evaluator of search space '{self.space.name}' raised "
                                f"{type(e).__name__}: {e}") from e
        eval_s = time.perf_counter() - t1
        if not math.isfinite(reward):
            raise ArchlabError(f"the evaluator returned a non-finite reward {reward}")
        trial.set_user_attr("reward", reward)
        trial.set_user_attr("eval_s", eval_s)
        trial.set_user_attr("overhead_s", time.perf_counter() - t0 - eval_s)
        values = [reward if o == "reward" else float(getattr(metrics, o)) for o in self.objectives]
        return TrialState.COMPLETE, (values if len(values) > 1 else values[0]), eval_s

    def _describe(self, trial: optuna.Trial, graph: Graph) -> tuple[Metrics, str]:
        # A space decides only through trial.suggest_* (its contract), so equal
        # parameters give an equal graph: repeats (common once a sampler
        # converges) skip the analyzers and the YAML dump.
        key = tuple(sorted((k, repr(v)) for k, v in trial.params.items()))
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = (measure(graph), _arch_dump(graph))
            if len(self._cache) > 4096:
                self._cache.pop(next(iter(self._cache)))
        return hit

    @staticmethod
    def _prune(trial: optuna.Trial, reason: str) -> TrialState:
        trial.set_user_attr("pruned_reason", reason)
        return TrialState.PRUNED


def _arch_dump(graph: Graph) -> str:
    from archlab.lang import dump

    return dump(graph)


def run_search(config: SearchConfig, progress: Callable[[Progress], None] | None = None) -> SearchResult:
    """Open the study ``config`` describes and run this worker's share of it.

    Raises:
        ArchlabError: see :meth:`Worker.open`; also a trial whose space or
            evaluator raised an unexpected exception (the trial is FAIL).
    """
    return Worker.open(config).run(progress)


__all__ = ["SearchConfig", "SearchResult", "Progress", "Worker", "run_search", "arch_text", "best_trial",
           "best_reward", "OBJECTIVES", "ARCH_CHUNK"]
