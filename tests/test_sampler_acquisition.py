"""``replay_target="tpe"``: TPE's proposal distribution in closed form, checked against
Optuna's own TPESampler, and the controller's choice counts it reads."""
from __future__ import annotations


import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from archlab.search.samplers import _acquisition
from archlab.search.samplers._config import ReinforceConfig
from archlab.search.samplers._controller import Controller

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _optuna_frequencies(xs, values, n_choices, draws, candidates):
    """How often Optuna's default TPESampler proposes each choice after these trials."""
    dist = CategoricalDistribution(list(range(n_choices)))
    study = optuna.create_study(direction="maximize")
    study.add_trials([create_trial(params={"x": int(x)}, distributions={"x": dist}, value=float(v))
                      for x, v in zip(xs, values)])
    freq = np.zeros(n_choices)
    for seed in range(draws):
        trial = study.ask()
        freq[optuna.samplers.TPESampler(
            seed=seed, n_ei_candidates=candidates).sample_independent(study, trial, "x", dist)] += 1
        study.tell(trial, state=TrialState.FAIL)  # failed trials are not observations
    return freq / draws


@pytest.mark.parametrize("candidates", [24, 2])
@pytest.mark.parametrize("case", [
    # (choices of the trials, their values): no two choices tie in l/g
    ([2, 1, 1, 2, 1, 0, 3, 1, 2, 1, 1, 0], [0.1, 2.0, 0.3, 1.5, 0.2, -1, 0.5, 0.4, 0.0, -0.2, 0.6, 0.7]),
    ([2, 2, 0, 1, 1, 1, 3, 4, 0, 1, 1, 2, 2, 0, 3, 1, 1, 1, 0, 0],
     [3.0, 0.5, 2.5, 0.1, 0.2, 0.3, -1, 0.0, 0.4, 0.1, 0.2, 0.3, 0.1, 0.6, 0.5, 0.0, 0.1, 0.2, 0.3, 0.1]),
])
def test_the_closed_form_matches_optunas_tpe(case, candidates):
    xs, values = np.array(case[0]), np.array(case[1])
    n_choices, n = 5, len(xs)
    order = np.argsort(-values)
    k = int(np.ceil(0.1 * n))  # Optuna's default gamma
    below = np.bincount(xs[order[:k]], minlength=n_choices)
    above = np.bincount(xs[order[k:]], minlength=n_choices)
    score = np.log(_acquisition.parzen(below, 1.0)) - np.log(_acquisition.parzen(above, 1.0))
    assert len(set(np.round(score, 9))) == n_choices  # ties are broken by Optuna's rounding
    expected = _acquisition.proposal(below, above, candidates=candidates)
    measured = _optuna_frequencies(xs, values, n_choices, draws=1500, candidates=candidates)
    assert np.abs(expected - measured).max() < 0.04, (expected, measured)
    assert expected.sum() == pytest.approx(1.0)


def test_one_candidate_is_l_and_more_candidates_are_greedier():
    below, above = np.array([2.0, 0, 0, 1]), np.array([1.0, 6, 0, 3])
    l = _acquisition.parzen(below, 1.0)
    assert np.allclose(_acquisition.proposal(below, above, candidates=1), l)
    best = int(np.argmax(np.log(l) - np.log(_acquisition.parzen(above, 1.0))))
    shares = [_acquisition.proposal(below, above, candidates=c)[best] for c in (1, 4, 24)]
    assert shares[0] < shares[1] < shares[2] < 1.0
    # no observation: the uniform prior; tied choices share their group's mass evenly
    assert np.allclose(_acquisition.parzen(np.zeros(4), 1.0), 0.25)
    assert np.allclose(_acquisition.proposal(np.zeros(3), np.zeros(3)), 1 / 3)
    # without a prior, l is 0 off the below trials' choices: those never win, nothing is NaN
    p = _acquisition.proposal(np.array([1.0, 0, 0]), np.array([0.0, 3, 0]), prior_weight=0.0)
    assert np.isfinite(p).all() and p.tolist() == [1.0, 0.0, 0.0]


def test_the_controller_counts_every_choice_and_keeps_the_counts_in_its_snapshot():
    cfg = ReinforceConfig(replay_target="tpe")
    ctl = Controller(cfg, seed=0)
    for i, reward in enumerate((1.0, 3.0, 2.0, 0.0, 2.5)):
        ctl.apply([("x", 4, i % 4), ("y", 3, i % 3)], reward)
    assert ctl.counts["x"].tolist() == [2, 1, 1, 1] and ctl.counts["y"].tolist() == [2, 2, 1]
    back = Controller.from_bytes(ctl.to_bytes(), cfg)
    assert {k: c.tolist() for k, c in back.counts.items()} == {k: c.tolist() for k, c in ctl.counts.items()}
    # the replayed copy goes on exactly as the original
    for c in (ctl, back):
        c.apply([("x", 4, 3), ("y", 3, 0)], 4.0)
    assert all(torch.equal(ctl.params[k], back.params[k]) for k in ctl.params)


def test_the_tpe_target_pulls_the_policy_to_tpes_proposal():
    # equal rewards: every rank advantage is 0, so only the replay moves the policy.
    # The queue holds x=2 (ties go to the earlier entry); every other trial took x=0.
    def policy(target):
        cfg = ReinforceConfig(replay_target=target, replay_top_k=1, lr=0.02)
        ctl = Controller(cfg, seed=0)
        for x in [2] + [0] * 80:
            ctl.apply([("x", 3, x)], 1.0)
        with torch.no_grad():
            return ctl, ctl.step(ctl.begin(), "x", 3)[2].exp().numpy()

    ctl, p = policy("tpe")
    below = np.array([0.0, 0.0, 1.0])
    target = _acquisition.proposal(below, ctl.counts["x"] - below,
                                   candidates=ctl.config.replay_candidates)
    assert np.abs(p - target).max() < 0.05, (p, target)
    # TPE avoids x=0, which every worse trial took; l alone keeps it at its floor
    assert p[0] < 0.02 and policy("marginal")[1][0] > 0.1
