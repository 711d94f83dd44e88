"""``ReinforceSampler``: an LSTM controller trained with REINFORCE, as an Optuna sampler.

Zoph & Le (ICLR 2017): a controller samples an architecture one decision at a
time, the architecture is evaluated for a reward R, and the gradient of the
sample's log-probability is scaled by an advantage: by default the rank of R
among the last ``reward_window`` rewards, mapped to [-1, 1]
(``ReinforceConfig.advantage``; Zoph & Le's ``R - baseline`` is
``advantage="raw"``). For searches of tens of trials the default step is 5x
ENAS's, two steps are taken per reward, and each step also fits the best
trajectories so far (priority-queue training, Abolafia et al. 2018; by default
the best 10 % of the rewards seen, ``replay_fraction``, at most
``replay_top_k``): by default, at each of their decisions, the distribution of
the choice that TPE would propose with them as its best trials and every other
record as the rest (``replay_target="tpe"``, ``_acquisition.py``), so the
policy recombines the best candidates' choices and tries the choices the worse
trials seldom took. ``replay_updates`` can end the replay after a number of
updates, the step then dropping to ``late_lr``. The queue and the choice counts
are part of the controller's state, so they are rebuilt from the update log
like everything else; the step is a function of the update count. Here every
``trial.suggest_*`` call of a define-by-run space is one controller step, in
suggestion order, so a space whose later decisions depend on earlier ones works
unchanged; new parameter names (or new choice sets) grow the controller.

State in storage, as an update log
    The controller's state is a deterministic function of its seed and of the
    sequence of update records (see ``_controller.py``). Each finished trial
    stores its own record (trajectory and reward) in its trial system attrs, and
    the *canonical order* of updates is the trial number. A worker keeps a
    *stable* state covering every trial numbered below the first unfinished
    trial, plus a *live* state that also applies the records of later finished
    trials; it samples from the live state. Every ``snapshot_every`` updates the
    stable state (weights, Adam moments, baseline, reward window, replay queue, update count)
    is written to the study system attrs in chunks, so a restart replays at most
    that many records. Per trial this costs one small write instead of a ~0.5 MB state.

Concurrency semantics
    No update is ever lost or applied twice, and workers that have seen the same
    finished trials hold bit-identical controllers (on the same hardware): they
    replay the same records in the same order from the same seed. A record that
    arrives out of order (trial 7 finished before trial 5) is merged by
    replaying the tail from the stable state. ``update_count`` counts the records
    applied; it never decreases, except when an update is withdrawn because its
    trial's final state could not be stored. A trial left RUNNING by a dead worker holds the
    stable point back (the tail keeps being applied); use RDB heartbeats so such
    trials become FAIL. Snapshot writes are last-writer-wins over two slots with
    a SHA-256 check; a torn snapshot is skipped and the log replayed instead.

No repeated candidates
    With ``avoid_duplicates`` (default) the sampler keeps a prefix tree of the
    decision sequences of the study's COMPLETE and PRUNED trials, and at each
    step gives probability 0 to the choices after which every continuation is
    such a trial. So, in a space whose decisions follow from the earlier ones, no
    candidate is proposed twice while an untried one is left (a running trial of
    another worker is not known yet and can be met again; enqueued parameters
    are taken as given). This changes only the draws, never a record or an
    update: the records, and so the controller, stay what they were.

Failed and pruned trials
    By default they update nothing (no reward is known; a pruned trial's
    intermediate value measures partial training). With ``failure_reward`` set
    they are updated with that reward (in reward units: higher is better in
    either direction), e.g. to teach the controller to avoid candidates that a
    constraint check prunes.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import threading
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from optuna.distributions import BaseDistribution
from optuna.samplers import RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from archlab.errors import ArchlabError
from archlab.search.samplers._sequential import SequentialSampler
from archlab.search.samplers import _store
from archlab.search.samplers._config import ReinforceConfig
from archlab.search.samplers._controller import Controller, Decision
from archlab.search.samplers._tokens import decision_key, decisions, on_grid, tokens
from archlab.search.samplers._tree import Node

__all__ = ["ReinforceSampler", "ReinforceConfig"]

_log = logging.getLogger(__name__)


class _Rollout:
    """A trial's recurrent state while its decisions are being sampled."""

    def __init__(self, ctl: Controller, node: Node | None) -> None:
        self.state = ctl.begin()
        self.decisions: list[Decision] = []
        self.seen: set[str] = set()
        self.node = node  # where the decisions so far lead in the tree of finished trials


class ReinforceSampler(SequentialSampler):
    """Samples a define-by-run space with an LSTM controller trained by REINFORCE.

    Args:
        config: Hyperparameters; see :class:`ReinforceConfig`.
        seed: Seeds the draws of this worker and, when the study has no controller
            yet, the controller's initial weights. Give each worker its own seed.
        **overrides: Fields of ``config`` to replace, e.g. ``hidden_size=100``.

    Raises:
        TypeError: An override is not a field of :class:`ReinforceConfig`.
    """

    def __init__(self, config: ReinforceConfig | None = None, *, seed: int | None = None,
                 **overrides: Any) -> None:
        cfg = config or ReinforceConfig()
        self._config = dataclasses.replace(cfg, **overrides) if overrides else cfg
        self._rng = np.random.RandomState(seed)
        self._proposal = int(seed) if seed is not None else random.SystemRandom().randrange(2**31)
        self._fallback = RandomSampler(seed=seed)
        self._lock = threading.RLock()
        self._bound: tuple[str, int] | None = None
        self._settings = self._config.state_settings()
        self._warned_legacy = False
        self._reset()

    def _reset(self) -> None:
        self._stable: Controller | None = None
        self._live: Controller | None = None
        self._tail: list[int] = []  # trial numbers applied to live on top of stable
        self._records: dict[int, _store.Record | None] = {}  # finished trials, parsed once
        self._pending: dict[int, _store.Record] = {}  # ours, recorded but state not yet stored
        self._rollouts: dict[int, _Rollout] = {}
        self._snapshot_gen = 0
        self._tree = Node()  # decision sequences of finished trials, for avoid_duplicates
        self._in_tree: set[int] = set()

    # ------------------------------------------------------------ public view
    @property
    def config(self) -> ReinforceConfig:
        return self._config

    @property
    def update_count(self) -> int:
        """Updates applied to the controller as of the last sync with the study."""
        with self._lock:
            return self._live.count if self._live is not None else 0

    def parameters(self) -> dict[str, torch.Tensor]:
        """A copy of the controller's weights, by name (empty before the first sync)."""
        with self._lock:
            live = self._live
            return {} if live is None else {k: t.detach().clone() for k, t in live.params.items()}

    def sync(self, study: Study) -> None:
        """Bring the controller up to date with the study's storage.

        Called by :meth:`before_trial`; call it yourself to
        inspect a study's controller without running a trial.
        """
        with self._lock:
            self._sync(study, self._trials(study))

    def check_study(self, study: Study) -> None:
        """Refuse a study whose controller was built with other settings than this sampler's.

        The controller's state is a function of its seed, the update log *and* the
        settings (``ReinforceConfig.state_settings``): a worker with another
        ``lr`` would replay the same log to another controller. Reads the study
        and writes nothing; :meth:`before_trial` checks again.

        Raises:
            ArchlabError: One line naming each differing setting, both values, and the fix.
        """
        with self._lock:
            self._check(study, _store.first_origin(self._trials(study)))

    def _check(self, study: Study, origin: tuple[int, dict | None] | None) -> None:
        if origin is not None and origin[1] is None and not self._warned_legacy:
            self._warned_legacy = True
            _log.warning("study '%s' predates stored controller settings: its controller is "
                         "continued with this worker's", study.study_name)
        elif origin is not None and origin[1] is not None and origin[1] != self._settings:
            diff = _store.settings_mismatch(origin[1], self._settings)
            if diff is not None:
                raise ArchlabError(_store.settings_refusal(study.study_name, diff))

    def log_prob(
        self, params: Mapping[str, Any], distributions: Mapping[str, BaseDistribution]
    ) -> float:
        """Log-probability that the controller samples ``params`` (in their order) now."""
        with self._lock, torch.no_grad():
            if self._live is None:
                raise RuntimeError("sync the sampler with a study first")
            logp, _ = self._live.clone().score(self._decisions(params, distributions))
            return float(logp)

    # --------------------------------------------------------- Optuna hooks
    def reseed_rng(self) -> None:
        """Reseed this worker's draws (Optuna calls it per thread with ``n_jobs > 1``)."""
        with self._lock:
            self._rng.seed()
            self._fallback.reseed_rng()

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Load the newest controller state; called as each trial starts, before sampling.

        Writes this worker's seed proposal and its controller settings into
        ``trial``'s system attrs if no trial of the study carries a seed yet.

        Raises:
            ArchlabError: The study has more than one objective, or its controller
                was built with other settings (``trial`` is then stored as FAIL).
        """
        if study._is_multi_objective():
            raise ArchlabError(
                f"the reinforce sampler optimizes one objective; this study has "
                f"{len(study.directions)}: use the nsga2 or tpe sampler, or return one "
                f"scalarised reward")
        with self._lock:
            trials = self._trials(study)
            if _store.first_origin(trials) is None:
                try:  # the settings first: a trial carrying the seed carries them too
                    study._storage.set_trial_system_attr(
                        trial._trial_id, _store.SETTINGS_KEY, self._settings)
                    study._storage.set_trial_system_attr(
                        trial._trial_id, _store.SEED_KEY, self._proposal)
                except Exception as exc:  # the next trial proposes again
                    _log.warning("could not store the controller seed: %s", exc)
            try:
                self._sync(study, trials)
            except ArchlabError as exc:  # lost a race to a worker with other settings
                study._storage.set_trial_user_attr(trial._trial_id, "error", str(exc))
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                raise

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        """One controller step: called on each ``suggest_*``, in suggestion order.

        Parameters the trial already holds without the controller having chosen
        them (enqueued or fixed) are fed first, teacher-forced, so the recurrent
        state follows the trial's real sequence. Distributions the controller does
        not discretise go to a :class:`~optuna.samplers.RandomSampler`.
        """
        values = tokens(param_distribution, self._config)
        if values is None:
            return self._fallback.sample_independent(study, trial, param_name, param_distribution)
        if len(values) == 1:
            return values[0]
        with self._lock, torch.no_grad():
            if self._live is None:
                self._sync(study, self._trials(study))
            ro = self._rollouts.get(trial._trial_id)
            if ro is None:
                ro = self._rollouts[trial._trial_id] = _Rollout(self._live, self._tree)
            self._catch_up(ro, trial.params, trial.distributions)
            key, n = decision_key(param_name, param_distribution), len(values)
            h, c, logq = self._live.step(ro.state, key, n)
            p = logq.double().exp().numpy()
            if self._config.avoid_duplicates and ro.node is not None:
                # choices that could only repeat a finished trial get probability 0,
                # unless every choice would (then the prefix is spent: sample freely)
                done = ro.node.exhausted(key, n)
                if any(done) and not all(done):
                    p = np.where(done, 0.0, p)
            index = int(self._rng.choice(n, p=p / p.sum()))
            self._advance(ro, h, c, key, n, index)
            ro.seen.add(param_name)
            return values[index]

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        """Store the trial's update record and apply it; called before its state is stored.

        Mutates only this trial's system attrs (the record) and, every
        ``snapshot_every`` updates, the study's snapshot attrs.
        """
        with self._lock:
            ro = self._rollouts.pop(trial._trial_id, None)
            record = self._record(study, trial, state, values, ro)
            if record is not None:
                try:
                    _store.write_record(
                        lambda k, v: study._storage.set_trial_system_attr(trial._trial_id, k, v),
                        record, self._config.chunk_chars)
                except Exception as exc:  # no worker will see it, so none applies it
                    _log.warning("trial %d: could not store its controller update: %s",
                                 trial.number, exc)
                    record = None
            if record is not None:
                self._pending[trial.number] = record
            live = self._live
            if (record is not None and live is not None and trial.number >= self._stable.upto
                    and all(n < trial.number for n in self._tail)):
                # in canonical order: apply now; the next sync confirms it once the
                # trial's state is stored (or replays without it if that failed)
                live.apply(record.decisions, record.reward)
                self._tail.append(trial.number)
            try:
                self._maybe_snapshot(study)
            except Exception as exc:  # a snapshot is a cache: the log stays authoritative
                _log.warning("could not write the controller snapshot: %s", exc)

    # ------------------------------------------------------------- internals
    def _record(self, study: Study, trial: FrozenTrial, state: TrialState,
                values: Sequence[float] | None, ro: _Rollout | None) -> _store.Record | None:
        if state == TrialState.COMPLETE and values:
            value = float(values[0])
            reward = value if study.direction == StudyDirection.MAXIMIZE else -value
        elif (state in (TrialState.FAIL, TrialState.PRUNED)
              and self._config.failure_reward is not None):
            reward = self._config.failure_reward
        else:
            return None
        if ro is None:  # told from elsewhere, or all params fixed: rebuild from the params
            decisions = self._decisions(trial.params, trial.distributions)
        else:
            with torch.no_grad():
                self._catch_up(ro, trial.params, trial.distributions)
            decisions = ro.decisions
        return _store.Record(state, reward, decisions) if decisions else None

    def _decisions(self, params: Mapping[str, Any],
                   distributions: Mapping[str, BaseDistribution]) -> list[Decision]:
        return decisions(params, distributions, self._config)

    def _advance(self, ro: _Rollout, h: torch.Tensor, c: torch.Tensor, key: str, n: int,
                 index: int) -> None:
        ro.state = (h, c, self._live.token(key, index))
        ro.decisions.append((key, n, index))
        ro.node = None if ro.node is None else ro.node.child(key, n, index)

    def _catch_up(self, ro: _Rollout, params: Mapping[str, Any],
                  distributions: Mapping[str, BaseDistribution]) -> None:
        for name, value in params.items():
            if name in ro.seen:
                continue
            ro.seen.add(name)
            for key, n, index in self._decisions({name: value}, distributions):
                h, c, _ = self._live.step(ro.state, key, n)
                self._advance(ro, h, c, key, n, index)

    def _remember(self, trial: FrozenTrial, record: _store.Record | None) -> None:
        """Add a finished trial's decision sequence to the tree that avoid_duplicates reads.

        A trial the controller could not have proposed (a parameter left to the
        numeric fallback, or a number off its grid, e.g. enqueued) is left out: the
        controller's nearest candidate is another one.
        """
        self._in_tree.add(trial.number)
        if not on_grid(trial.params, trial.distributions, self._config):
            return
        mine = self._decisions(trial.params, trial.distributions)
        seq = record.decisions if record is not None else mine
        if seq and len(seq) == len(mine):
            self._tree.add(seq)

    def _trials(self, study: Study) -> list[FrozenTrial]:
        bound = (study.study_name, study._study_id)
        if self._bound != bound:
            self._bound = bound
            self._reset()
        return study._storage.get_all_trials(study._study_id, deepcopy=False)

    def _sync(self, study: Study, trials: list[FrozenTrial]) -> None:
        origin = _store.first_origin(trials)
        self._check(study, origin)
        seed = self._proposal if origin is None else origin[0]
        upto = len(trials) and trials[-1].number + 1
        records: list[tuple[int, _store.Record]] = []
        for t in trials:
            if t.state.is_finished():
                self._pending.pop(t.number, None)
                if t.number not in self._records:
                    self._records[t.number] = _store.read_record(t)
                rec = self._records[t.number]
                if (self._config.avoid_duplicates and t.number not in self._in_tree
                        and t.state in (TrialState.COMPLETE, TrialState.PRUNED)):
                    self._remember(t, rec)
            else:
                upto = min(upto, t.number)
                rec = self._pending.get(t.number)  # keeps its update live meanwhile
            if rec is not None:
                records.append((t.number, rec))
        if self._stable is None or self._stable.seed != seed:
            self._stable = self._load(study, seed)
            self._live, self._tail = self._stable.clone(), []
        stable = self._stable
        fresh = [(n, r) for n, r in records if stable.upto <= n < upto]
        if upto > stable.upto:
            if self._tail == [n for n, _ in fresh]:
                stable = self._live  # live is exactly stable + fresh
            else:
                for _, r in fresh:
                    stable.apply(r.decisions, r.reward)
            stable.upto = upto
            self._stable, self._live, self._tail = stable, stable.clone(), []
        tail = [(n, r) for n, r in records if n >= max(upto, self._stable.upto)]
        if self._tail != [n for n, _ in tail[:len(self._tail)]]:
            self._live, self._tail = self._stable.clone(), []  # out-of-order arrival: replay
        for n, r in tail[len(self._tail):]:
            self._live.apply(r.decisions, r.reward)
            self._tail.append(n)

    def _load(self, study: Study, seed: int) -> Controller:
        attrs = study._storage.get_study_system_attrs(study._study_id)
        ctl = _store.load_controller(attrs, seed, self._config)
        if ctl is None:
            ctl = Controller(self._config, seed)
        self._snapshot_gen = ctl.count // self._config.snapshot_every
        return ctl

    def _maybe_snapshot(self, study: Study) -> None:
        stable, every = self._stable, self._config.snapshot_every
        if stable is not None and stable.count // every > self._snapshot_gen:
            self._snapshot_gen = stable.count // every
            _store.snapshot(study._storage, study._study_id, stable, self._snapshot_gen % 2,
                            self._config.chunk_chars)
