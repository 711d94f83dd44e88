"""The distribution of one categorical decision that Optuna's TPE would propose, in closed form.

TPE (Bergstra et al. 2011; ``optuna.samplers.TPESampler``'s defaults: univariate,
``prior_weight=1``, ``n_ei_candidates=24``) splits the trials so far into the best
``gamma(n)`` ("below") and the rest ("above"), fits a Parzen estimator to each,
``l(x)`` and ``g(x)``, draws 24 candidates from ``l`` and proposes the one with the
largest ``l(x) / g(x)``. For a categorical decision both estimators are smoothed
choice frequencies, so the probability that the proposal is choice ``c`` has a
closed form: rank the choices by ``l/g``; a choice wins when at least one of the 24
draws falls on it and none on a better-ranked choice. That is what the
controller's ``replay_target="tpe"`` fits, so the policy is pulled each update
towards the decision TPE itself would take, including TPE's preference for choices
that the worse trials seldom tried (a small ``g``), the exploration the
``"marginal"`` target (``l`` alone) lacks.

Pure numpy, no state: the controller passes the choice counts it keeps.
"""
from __future__ import annotations

import numpy as np

N_CANDIDATES = 24  # Optuna's n_ei_candidates


def parzen(counts: np.ndarray, prior_weight: float) -> np.ndarray:
    """Optuna's categorical Parzen estimator of ``m = counts.sum()`` observations.

    Each observation is a kernel with mass 1 on its choice plus ``prior_weight / (m + 1)``
    on every choice (normalised), mixed with weight 1 each and a uniform prior
    kernel of weight ``prior_weight`` (``optuna/samplers/_tpe/parzen_estimator.py``;
    all observations weigh 1, Optuna's weights for fewer than 25 trials).
    No observation: uniform.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n, m = counts.size, counts.sum()
    if m <= 0:
        return np.full(n, 1.0 / n)
    smooth = prior_weight / (m + 1.0)
    kernels = (counts + m * smooth) / (1.0 + n * smooth)
    return (kernels + prior_weight / n) / (m + prior_weight)


def proposal(below: np.ndarray, above: np.ndarray, prior_weight: float = 1.0,
             candidates: int = N_CANDIDATES) -> np.ndarray:
    """P(TPE proposes each choice) given the choice counts of the below and above trials.

    Choices with equal ``l/g`` form one group that wins when a draw falls in it
    before any better-ranked one; within it the first draw decides, so the group's
    probability is split in proportion to ``l`` (Optuna's ``argmax`` takes the
    first of tied candidates, and the draws are exchangeable). A choice with
    ``l = 0`` (``prior_weight=0``, never among the below trials) gets 0. Sums to 1.
    """
    lo, go = parzen(below, prior_weight), parzen(above, prior_weight)
    with np.errstate(divide="ignore", invalid="ignore"):  # prior_weight=0 leaves zeros
        score = np.log(lo) - np.log(go)
    out = np.zeros_like(lo)
    left = 1.0  # l-mass of the choices not better ranked than the current group
    for s in np.unique(score[lo > 0])[::-1]:  # a choice l never draws cannot win
        group = (score == s) & (lo > 0)
        mass = lo[group].sum()
        win = left**candidates - max(left - mass, 0.0) ** candidates
        out[group] = win * lo[group] / mass
        left -= mass
    return out / out.sum()
