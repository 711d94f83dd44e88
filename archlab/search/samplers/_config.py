"""``ReinforceConfig``: the REINFORCE controller's hyperparameters, each with the
reason for its default (the controller itself is ``_controller.py``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

# Fields that change only this worker's draws or how the state is written, never
# the controller the update log replays to; every other field is part of the state.
_NOT_STATE = ("avoid_duplicates", "snapshot_every", "chunk_chars")


@dataclass(frozen=True)
class ReinforceConfig:
    """Hyperparameters of :class:`~archlab.search.samplers.ReinforceSampler`.

    The network and optimiser defaults follow the ENAS controller (Pham et al.
    2018) where they apply and are tuned for searches of a few hundred trials, one
    controller update per trial. Defaults that depart from Zoph & Le / ENAS,
    because they made the difference on NAS-Bench-201 (``benchmarks/README.md``):
    the advantage is rank-based (``advantage="rank"``), a decision sequence that a
    finished trial already has is not proposed again (``avoid_duplicates``), and,
    for searches of tens of noisy trials, a 5x larger step, two steps per record,
    and priority-queue replay of the best 10 % of the trajectories so far (at
    most 25) at every update, fitting per decision the distribution of the choice
    that TPE would propose with them as its best trials and every other record as
    the rest (``replay_target="tpe"``) rather than their sequences. The replay
    settings were chosen on NB201 with one recorded training run as the reward:
    ``lr`` on CIFAR-10 seeds 0-9, ``replay_fraction`` on seeds 0-39 of CIFAR-10,
    CIFAR-100 and ImageNet16-120, ``replay_updates=None`` on seeds 0-39 of
    CIFAR-10 and CIFAR-100, ``replay_target``, ``replay_candidates``,
    ``replay_top_k`` and ``updates_per_record`` on seeds 0-39 of the three
    datasets and CIFAR-100 seeds 0-99 and 500-599 (round 6).
    """

    hidden_size: int = 64  # LSTM width; ENAS uses 64-100; 64 keeps a snapshot near 0.5 MB
    lr: float = 5e-3  # Adam step; above ENAS's 3.5e-4..1e-3: tens of trials give tens of updates
    baseline_decay: float = 0.95  # reward EMA, the baseline of "raw" and "zscore"; ~20-trial memory
    entropy_weight: float = 1e-4  # entropy bonus in the loss (ENAS), keeps the policy exploring
    tanh_constant: float | None = 2.5  # logits = c*tanh(logits/T) (ENAS); caps max prob, None = off
    temperature: float = 1.0  # softmax temperature applied before the tanh clipping
    init_range: float = 0.1  # every weight starts uniform in [-r, r] (ENAS), so choices start even
    failure_reward: float | None = None  # reward for FAIL/PRUNED trials; None skips their update
    # How a reward becomes the advantage A that scales the gradient of the
    # trajectory's log-probability (the loss is -A log p - entropy_weight H):
    # "rank" (default): A = 2q - 1 in [-1, 1], q the fraction of the previous
    #   ``reward_window`` rewards that this one beats (ties count half). The window's
    #   median acts as the baseline; A ignores the reward's scale and outliers, so
    #   a few terrible candidates (a diverged run, a broken cell) do not dominate
    #   Adam's second moment and shrink every other update.
    # "raw": A = reward - baseline (Zoph & Le, ENAS), in reward units.
    # "zscore": A = (reward - baseline) / std of the previous ``reward_window`` rewards.
    # The first reward has A = 0.
    advantage: str = "rank"
    reward_window: int = 50  # previous rewards "rank" and "zscore" compare with (~ the policy now)
    # Adam steps on each record, each on a recomputed gradient. 2 with the "tpe" target
    # (round 6): the policy follows a target that changes with every record, and one
    # step left it lagging (CIFAR-100 @50 over 200 seeds 72.04 -> 72.22, TPE 72.19);
    # alone, with the sequence replay, 2 and 3 had not helped (rounds 1 and 4).
    updates_per_record: int = 2
    # Priority-queue training (Abolafia et al. 2018): the controller keeps the
    # ``replay_top_k`` distinct trajectories with the best rewards so far (a
    # trajectory met again keeps the mean of its rewards) and every step adds
    # ``replay_weight`` x their mean log-likelihood (by default of the queue's smoothed
    # per-decision distribution, see ``replay_target``) to the objective, so the policy
    # is pulled towards the best candidates from the first few trials on instead
    # of waiting for the policy gradient alone. 0 turns it off.
    # 25 as TPE's gamma caps its best trials (min(ceil(0.1 n), 25)): with the "tpe"
    # target and a cap of 5, the best 5 noisy rewards of 300 pinned the late search
    # (CIFAR-10 @300 91.50, TPE 91.57; 91.55 with 25). 5 until round 6.
    replay_top_k: int = 25
    replay_weight: float = 1.0
    # Updates (counting from the study's first) that use the replay; later ones are
    # plain REINFORCE again. None (default): every update. With the "sequence"
    # target a replay kept for the whole search pinned the policy on candidates
    # ranked by early noisy rewards (100 was the default then); the "marginal"
    # target keeps every choice at a floor, and stopping it no longer helped.
    replay_updates: int | None = None
    # Adam step once the replay phase is over (``count >= replay_updates``; ENAS's
    # range, the default before the replay; unused while ``replay_updates`` is
    # None); None keeps ``lr``. Meant to stop a
    # policy the replay has concentrated from drifting on single noisy rewards;
    # on NB201 it helped the CIFAR-100 tuning seeds (@300 72.96 -> 73.32) but was
    # neutral on the held-out check (benchmarks/README.md). A function of
    # ``count`` alone, so it needs no state of its own.
    late_lr: float | None = 1e-3
    # Replay only the best ``ceil(replay_fraction * n)`` of the queue, n the rewards
    # seen so far (at most ``replay_top_k``), as TPE's l(x) models only its best
    # 10 % (its gamma): with the whole queue the first k trials are *all* replayed,
    # a target as flat as their draws; with 0.1 the target of trials 2-10 is the best
    # one, of 11-20 the best two, as sharp as TPE's first model-based proposals.
    # With the "marginal" target 0.1 took CIFAR-100 @50 from 71.67 to 72.34 on NB201
    # tuning seeds 0-39 (TPE 72.16) and left CIFAR-10 and ImageNet16-120 level
    # (benchmarks/README.md, round 5); 0.2 gained less. None: the whole queue (with
    # the "sequence" target 0.1 and 0.2 did not beat it).
    replay_fraction: float | None = 0.1
    # What the replay fits, at every decision of every replayed trajectory
    # (teacher-forced on its prefix). "tpe" (default since round 6): the
    # distribution of the choice Optuna's TPE would propose with the replayed
    # trajectories as its best trials and every other record as the rest
    # (``_acquisition.proposal``): rank the choices by l(x)/g(x), draw
    # ``replay_candidates`` from l. Unlike l alone it favours choices the worse
    # trials seldom tried, which is what the "marginal" target lacked: on
    # CIFAR-100 seeds 500-599 its searches below 71.5 @100 went from 16 to 4 of 100
    # (TPE 2). "sequence": each queued trajectory's own choices (the
    # joint distribution of the k best, as Abolafia et al.). "marginal": at every
    # decision of every queued trajectory (teacher-forced on its prefix), the
    # queue's distribution of that decision's choices smoothed by
    # ``replay_prior`` pseudo-counts spread evenly over the choices, as TPE's
    # l(x) of its best trials: the policy recombines the best candidates' choices
    # and keeps every choice at a floor instead of collapsing onto k sequences.
    replay_target: str = "tpe"
    replay_prior: float = 1.0  # TPE's prior_weight; 0.5 (sharper) did not beat it on NB201
    # With replay_target="tpe": the number of candidates TPE draws from l(x) before
    # it proposes the one with the largest l(x)/g(x). 1 fits l(x) itself; more is
    # greedier. Optuna's 24 made the policy commit early (CIFAR-100 seeds 500-599,
    # 100 evaluations: 13 searches below 71.5 @100; 8: 14; 4: 4; 2: 7).
    replay_candidates: int = 4
    # Give probability 0 to every choice after which only decision sequences of
    # COMPLETE or PRUNED trials remain, so the controller proposes no candidate
    # twice until the space is exhausted (a FAIL may be transient, a dead worker:
    # those are proposed again). The update still uses the unmasked policy's
    # log-probability. Trials with parameters left to the numeric fallback are
    # not counted as taken.
    avoid_duplicates: bool = True
    numeric: str = "discretize"  # int/float params: "discretize" into tokens or "fallback" random
    numeric_bins: int = 10  # grid points for a float (or a wide int) that is discretized
    max_int_choices: int = 32  # ints with at most this many values get one token per value
    snapshot_every: int = 50  # updates between full-state snapshots written to the study
    chunk_chars: int = 60_000  # chars per stored attr; TEXT since Optuna 2.6, MySQL caps at 64 KiB

    def state_settings(self) -> dict:
        """The fields the controller's state depends on (all but the draw and storage
        ones), as stored in the study: workers replaying one log must agree on them."""
        return {k: v for k, v in asdict(self).items() if k not in _NOT_STATE}

    def __post_init__(self) -> None:
        if self.hidden_size < 1 or self.lr <= 0 or self.temperature <= 0:
            raise ValueError("hidden_size, lr and temperature must be positive")
        if self.replay_fraction is not None and not 0.0 < self.replay_fraction <= 1.0:
            raise ValueError(f"replay_fraction must be in (0, 1] or None, got {self.replay_fraction}")
        if self.late_lr is not None and self.late_lr <= 0:
            raise ValueError(f"late_lr must be positive or None, got {self.late_lr}")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}")
        if self.numeric not in ("discretize", "fallback"):
            raise ValueError(f"numeric must be 'discretize' or 'fallback', got {self.numeric!r}")
        if self.numeric_bins < 2 or self.snapshot_every < 1 or self.chunk_chars < 64:
            raise ValueError("numeric_bins >= 2, snapshot_every >= 1 and chunk_chars >= 64")
        if self.replay_target not in ("sequence", "marginal", "tpe"):
            raise ValueError(f"replay_target must be 'sequence', 'marginal' or 'tpe', "
                             f"got {self.replay_target!r}")
        if self.replay_candidates < 1:
            raise ValueError(f"replay_candidates must be >= 1, got {self.replay_candidates}")
        if self.replay_prior < 0:
            raise ValueError(f"replay_prior must be >= 0, got {self.replay_prior}")
        if self.advantage not in ("raw", "zscore", "rank"):
            raise ValueError(f"advantage must be 'raw', 'zscore' or 'rank', got {self.advantage!r}")
        if self.reward_window < 2 or self.updates_per_record < 1:
            raise ValueError("reward_window >= 2 and updates_per_record >= 1")
        if self.replay_top_k < 0 or self.replay_weight < 0 or (self.replay_updates or 0) < 0:
            raise ValueError("replay_top_k, replay_weight and replay_updates must be >= 0")
