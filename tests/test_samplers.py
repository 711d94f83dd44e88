"""The search samplers: REINFORCE controller, regularized evolution and ``make_sampler``.

The toy space has 8 decisions of 5 choices; the reward counts the decisions equal
to a hidden target (plus Gaussian noise), so the optimum is known and random
search finds it with probability 5**-8 per trial.
"""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from archlab.errors import ArchlabError
from archlab.search import RegularizedEvolutionSampler, ReinforceSampler, make_sampler
from archlab.search.samplers import _store
from archlab.search.samplers.evolution import LINEAGE_KEY

optuna.logging.set_verbosity(optuna.logging.WARNING)

DECISIONS, CHOICES = 8, 5


def _target(seed: int) -> list[int]:
    return [int(x) for x in np.random.default_rng(seed).integers(0, CHOICES, DECISIONS)]


def _toy(target: list[int], *, noise: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed + 1000)

    def objective(trial: optuna.Trial) -> float:
        choices = list(range(CHOICES))
        picks = [trial.suggest_categorical(f"op{i}", choices) for i in range(DECISIONS)]
        return _matches(picks, target) + float(rng.normal(0.0, noise))

    return objective


def _matches(picks, target) -> int:
    return sum(int(a == b) for a, b in zip(picks, target))


def _true_scores(study: optuna.Study, target: list[int]) -> list[int]:
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    return [_matches([t.params[f"op{i}"] for i in range(DECISIONS)], target) for t in done]


def _toy_dists() -> dict:
    return {f"op{i}": optuna.distributions.CategoricalDistribution(list(range(CHOICES)))
            for i in range(DECISIONS)}


def _sqlite(tmp_path, name: str = "s.db") -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / name}")


def _heads(sampler: ReinforceSampler) -> set[str]:
    """Parameter names the controller has a softmax head for."""
    return {k.split(".", 1)[1].split("#")[0] for k in sampler.parameters()
            if k.startswith("head_b.")}


def _same_parameters(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- search quality
@pytest.fixture(scope="module")
def toy_results():
    """Best and late-trial true scores of each sampler: 4 seeds x 120 trials."""
    out = {}
    for name in ("random", "evolution", "reinforce"):
        best, late = [], []
        for seed in range(4):
            target = _target(seed)
            study = optuna.create_study(direction="maximize", sampler=make_sampler(name, seed=seed))
            study.optimize(_toy(target, seed=seed), n_trials=120)
            scores = _true_scores(study, target)
            best.append(max(scores))
            late.append(float(np.mean(scores[-30:])))
        out[name] = (float(np.mean(best)), float(np.mean(late)))
    return out


@pytest.mark.parametrize("name", ["reinforce", "evolution"])
def test_learning_samplers_find_better_architectures_than_random(toy_results, name):
    best, late = toy_results[name]
    random_best, random_late = toy_results["random"]
    print(f"\n{name}: best {best:.2f} (random {random_best:.2f}), "
          f"last-30 mean {late:.2f} (random {random_late:.2f})")
    assert best >= random_best + 1.0
    assert late >= random_late + 2.0  # random's expectation is 8/5 = 1.6


def test_controller_probability_of_the_optimum_rises():
    target = _target(7)
    study = optuna.create_study(direction="maximize")
    sampler = ReinforceSampler(seed=7)
    sampler.sync(study)
    optimum = {f"op{i}": v for i, v in enumerate(target)}
    before = sampler.log_prob(optimum, _toy_dists())
    assert before == pytest.approx(DECISIONS * math.log(1 / CHOICES), abs=0.5)  # near uniform
    study.sampler = sampler
    study.optimize(_toy(target, seed=7), n_trials=120)
    after = sampler.log_prob(optimum, _toy_dists())
    assert sampler.update_count == 120
    assert after > before + 4.0


# ------------------------------------------------------------------ define-by-run
def _conditional(trial: optuna.Trial) -> float:
    block = trial.suggest_categorical("block", ["plain", "residual", "bottleneck"])
    if block == "plain":
        depth = trial.suggest_int("depth", 1, 4)
        score = depth
    elif block == "residual":
        width = trial.suggest_categorical("width", [16, 32, 64])
        score = width / 16 + trial.suggest_float("drop", 0.0, 0.5)
    else:
        expand = trial.suggest_categorical("expand", [2, 4, 6])
        score = expand + trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    return float(score)


def test_a_define_by_run_conditional_space_grows_the_controller():
    sampler = ReinforceSampler(seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_conditional, n_trials=40)
    seen = {name for t in study.trials for name in t.params}
    assert seen == {"block", "depth", "width", "drop", "expand", "lr"}
    assert _heads(sampler) == seen
    assert sampler.update_count == 40
    for t in study.trials:  # discretised numbers are values of their distributions
        for name, value in t.params.items():
            dist = t.distributions[name]
            assert dist._contains(dist.to_internal_repr(value))


def test_numeric_fallback_delegates_ints_and_floats_to_random_sampling():
    sampler = ReinforceSampler(seed=0, numeric="fallback")
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_conditional, n_trials=15)
    assert _heads(sampler) <= {"block", "width", "expand"}


# ---------------------------------------------------------- storage and restarts
def test_a_resumed_study_continues_from_the_saved_controller(tmp_path):
    storage = _sqlite(tmp_path)
    target = _target(3)
    # small chunks and frequent snapshots exercise CmaEsSampler-sized attrs
    first = ReinforceSampler(seed=3, snapshot_every=5, chunk_chars=2045)
    study = optuna.create_study(study_name="resume", storage=storage, direction="maximize",
                                sampler=first)
    study.optimize(_toy(target, seed=3), n_trials=12)
    saved = first.parameters()
    attrs = storage.get_study_system_attrs(study._study_id)
    metas = [m for m, _ in _store.read_snapshots(attrs, seed=3)]
    assert max(m["count"] for m in metas) == 10 and max(m["chunks"] for m in metas) > 100

    second = ReinforceSampler(seed=4, snapshot_every=5, chunk_chars=2045)  # a new process
    resumed = optuna.load_study(study_name="resume", storage=_sqlite(tmp_path), sampler=second)
    second.sync(resumed)
    assert second.update_count == 12
    assert _same_parameters(second.parameters(), saved)
    resumed.optimize(_toy(target, seed=3), n_trials=8)
    assert second.update_count == 20 and len(resumed.trials) == 20


def test_a_torn_snapshot_is_ignored_and_the_log_replayed(tmp_path):
    storage = _sqlite(tmp_path)
    first = ReinforceSampler(seed=5, snapshot_every=4)
    study = optuna.create_study(study_name="torn", storage=storage, direction="maximize",
                                sampler=first)
    study.optimize(_toy(_target(5)), n_trials=9)
    for slot in (0, 1):
        storage.set_study_system_attr(study._study_id, f"{_store.SNAPSHOT_KEY}:{slot}:0", "garbage")
    second = ReinforceSampler(seed=6, snapshot_every=4)
    second.sync(optuna.load_study(study_name="torn", storage=storage))
    assert second.update_count == 9
    assert _same_parameters(second.parameters(), first.parameters())


def test_workers_sharing_a_study_share_one_controller(tmp_path):
    storage = _sqlite(tmp_path)
    target = _target(2)
    a, b = ReinforceSampler(seed=10), ReinforceSampler(seed=11)
    study_a = optuna.create_study(study_name="w", storage=storage, direction="maximize", sampler=a)
    study_b = optuna.load_study(study_name="w", storage=_sqlite(tmp_path), sampler=b)
    for _ in range(5):  # two processes taking turns
        study_a.optimize(_toy(target), n_trials=2)
        study_b.optimize(_toy(target), n_trials=1)
    a.sync(study_a)
    b.sync(study_b)
    assert a.update_count == b.update_count == 15
    assert _same_parameters(a.parameters(), b.parameters())


def test_a_worker_with_other_controller_settings_is_refused_before_it_writes(tmp_path):
    storage = _sqlite(tmp_path)
    study = optuna.create_study(study_name="cfg", storage=storage, direction="maximize",
                                sampler=ReinforceSampler(seed=1, lr=0.005))
    study.optimize(_toy(_target(1)), n_trials=3)
    first = study.trials[0].system_attrs
    assert first[_store.SETTINGS_KEY]["lr"] == 0.005 and first[_store.SEED_KEY] == 1

    other = ReinforceSampler(seed=2, lr=0.01, replay_top_k=3)
    joined = optuna.load_study(study_name="cfg", storage=_sqlite(tmp_path), sampler=other)
    with pytest.raises(ArchlabError) as err:
        other.check_study(joined)
    msg = str(err.value)
    assert "\n" not in msg and "'cfg'" in msg and "another --study name" in msg
    assert "lr=0.005 (this worker: 0.01)" in msg and "replay_top_k=25 (this worker: 3)" in msg
    assert len(joined.trials) == 3  # nothing written

    # draw-only and storage settings may differ; the same settings join and agree
    same = ReinforceSampler(seed=3, lr=0.005, avoid_duplicates=False, snapshot_every=7, chunk_chars=999)
    again = optuna.load_study(study_name="cfg", storage=_sqlite(tmp_path), sampler=same)
    same.check_study(again)
    again.optimize(_toy(_target(1)), n_trials=2)
    assert same.update_count == 5


def test_a_worker_that_meets_other_settings_mid_run_fails_only_its_trial(tmp_path):
    # two workers created the study at once: the later one finds the winner's
    # settings at its next trial; that trial is FAIL with the reason, none is left RUNNING
    storage = _sqlite(tmp_path)
    a = ReinforceSampler(seed=1)
    b = ReinforceSampler(seed=2, replay_target="sequence")
    study_a = optuna.create_study(study_name="race", storage=storage, direction="maximize", sampler=a)
    study_b = optuna.load_study(study_name="race", storage=_sqlite(tmp_path), sampler=b)
    b.check_study(study_b)  # nothing to compare with yet
    study_a.optimize(_toy(_target(1)), n_trials=2)
    with pytest.raises(ArchlabError, match=r"replay_target='tpe' \(this worker: 'sequence'\)"):
        study_b.ask()
    states = [t.state for t in study_a.trials]
    assert states == [TrialState.COMPLETE] * 2 + [TrialState.FAIL]
    assert "replay_target" in study_a.trials[-1].user_attrs["error"]


def test_a_study_from_before_the_settings_were_stored_is_continued(tmp_path, caplog, monkeypatch):
    storage = _sqlite(tmp_path)
    study = optuna.create_study(study_name="old", storage=storage, direction="maximize",
                                sampler=ReinforceSampler(seed=1))
    with monkeypatch.context() as m:  # an archlab that stored the seed only
        m.setattr(_store, "SETTINGS_KEY", _store.PREFIX + "not-read")
        study.optimize(_toy(_target(1)), n_trials=3)
    assert _store.SETTINGS_KEY not in study.trials[0].system_attrs
    later = ReinforceSampler(seed=2, lr=0.01)
    resumed = optuna.load_study(study_name="old", storage=_sqlite(tmp_path), sampler=later)
    with caplog.at_level("WARNING"):
        later.check_study(resumed)
        resumed.optimize(_toy(_target(1)), n_trials=2)
    assert later.update_count == 5
    assert sum("predates stored controller settings" in r.message for r in caplog.records) == 1


def test_settings_a_study_lacks_compare_with_their_defaults():
    stored = ReinforceSampler().config.state_settings()
    del stored["replay_prior"]  # a setting added to archlab after the study was made
    assert _store.settings_mismatch(stored, ReinforceSampler().config.state_settings()) is None
    assert _store.settings_mismatch(stored, ReinforceSampler(replay_prior=0.5).config.state_settings()) \
        == "replay_prior=1.0 (this worker: 0.5)"


def test_failed_and_pruned_trials_skip_the_update_unless_given_a_reward():
    def flaky(trial: optuna.Trial) -> float:
        value = _toy(_target(0))(trial)
        if trial.number % 5 == 1:
            raise RuntimeError("training diverged")
        if trial.number % 5 == 2:
            raise optuna.TrialPruned()
        return float("nan") if trial.number % 5 == 3 else value

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # 15 expected "Trial failed" lines
    try:
        for failure_reward, expected in ((None, 10), (-1.0, 25)):
            sampler = ReinforceSampler(seed=0, failure_reward=failure_reward)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.optimize(flaky, n_trials=25, catch=(RuntimeError,))
            assert sampler.update_count == expected
            assert sum(t.state.name == "COMPLETE" for t in study.trials) == 10
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_enqueued_parameters_are_teacher_forced_into_the_update():
    target = _target(0)
    sampler = ReinforceSampler(seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({f"op{i}": v for i, v in enumerate(target)})
    study.enqueue_trial({"op0": target[0], "op1": target[1]})  # the rest sampled
    study.optimize(_toy(target), n_trials=3)
    records = [t.system_attrs[_store.RECORD_KEY] for t in study.trials]
    assert [index for _, _, index in records[0]["d"]] == target
    assert [len(r["d"]) for r in records] == [DECISIONS] * 3
    assert sampler.update_count == 3


def test_n_jobs_two_threads_share_the_sampler():
    sampler = ReinforceSampler(seed=1)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    lock, counts = threading.Lock(), []

    def watch(study, trial):
        with lock:
            counts.append(sampler.update_count)

    study.optimize(_toy(_target(1)), n_trials=24, n_jobs=2, callbacks=[watch])
    sampler.sync(study)
    assert len(study.trials) == 24 and sampler.update_count == 24
    assert counts == sorted(counts)  # the update count never goes back
    replayed = ReinforceSampler(seed=99)  # same log, replayed in trial-number order
    replayed.sync(study)
    assert _same_parameters(replayed.parameters(), sampler.parameters())


def test_multi_objective_studies_are_rejected_clearly():
    for sampler in (ReinforceSampler(seed=0), RegularizedEvolutionSampler(seed=0)):
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        with pytest.raises(ArchlabError, match="nsga2"):
            study.optimize(lambda t: (t.suggest_int("x", 0, 3), 1.0), n_trials=1)


def test_reinforce_overhead_per_trial_on_sqlite(tmp_path):
    def timed(sampler, name):
        study = optuna.create_study(study_name=name, storage=_sqlite(tmp_path, f"{name}.db"),
                                    direction="maximize", sampler=sampler)
        study.optimize(_toy(_target(0)), n_trials=5)  # warm up: tables, first snapshot read
        start = time.perf_counter()
        study.optimize(_toy(_target(0)), n_trials=30)
        return (time.perf_counter() - start) / 30 * 1e3

    random_ms = timed(optuna.samplers.RandomSampler(seed=0), "random")
    reinforce_ms = timed(ReinforceSampler(seed=0), "reinforce")
    print(f"\nper trial on SQLite: random {random_ms:.1f} ms, reinforce {reinforce_ms:.1f} ms "
          f"(controller overhead {reinforce_ms - random_ms:.1f} ms)")
    assert reinforce_ms < random_ms + 500  # loose: shared CI machines are noisy


# ------------------------------------------------ advantage, reward window, duplicates
def test_rank_advantage_is_the_centred_quantile_among_the_window():
    from archlab.search.samplers._config import ReinforceConfig
    from archlab.search.samplers._controller import Controller

    ctl = Controller(ReinforceConfig(reward_window=4), seed=0)
    assert ctl.advantage(5.0) == 0.0  # nothing to compare with yet
    for r in (1.0, 2.0, 3.0, 4.0, 100.0):
        ctl.apply([], r)
    assert list(ctl.rewards) == [2.0, 3.0, 4.0, 100.0]  # the last reward_window only
    assert ctl.advantage(1e6) == 1.0 and ctl.advantage(0.0) == -1.0
    assert ctl.advantage(3.0) == pytest.approx(2 * 1.5 / 4 - 1)  # a tie counts half
    assert ctl.advantage(50.0) == ctl.advantage(99.0)  # the scale does not matter, the rank does
    raw = Controller(ReinforceConfig(advantage="raw"), seed=0)
    raw.apply([], 10.0)
    raw.apply([], 20.0)
    assert raw.advantage(30.0) == pytest.approx(30.0 - (0.95 * 10 + 0.05 * 20))
    with pytest.raises(ValueError, match="advantage"):
        ReinforceConfig(advantage="median")


def test_the_reward_window_survives_to_bytes_and_a_resume(tmp_path):
    from archlab.search.samplers._controller import Controller

    storage = _sqlite(tmp_path)
    options = dict(reward_window=4, snapshot_every=5, updates_per_record=2)
    first = ReinforceSampler(seed=3, **options)
    study = optuna.create_study(study_name="window", storage=storage, direction="maximize",
                                sampler=first)
    study.optimize(_toy(_target(3), seed=3), n_trials=12)
    ctl = first._live
    again = Controller.from_bytes(ctl.to_bytes(), first.config)
    assert list(again.rewards) == list(ctl.rewards) and len(ctl.rewards) == 4
    assert again.baseline == ctl.baseline and again.count == ctl.count == 12
    assert again.advantage(3.7) == ctl.advantage(3.7)

    second = ReinforceSampler(seed=4, **options)  # a new process: snapshot at 10 + 2 records
    resumed = optuna.load_study(study_name="window", storage=_sqlite(tmp_path), sampler=second)
    second.sync(resumed)
    assert list(second._live.rewards) == list(ctl.rewards)
    assert _same_parameters(second.parameters(), first.parameters())
    replayed = ReinforceSampler(seed=5, **options)  # no snapshot: the whole log
    for slot in (0, 1):
        storage.set_study_system_attr(study._study_id, f"{_store.SNAPSHOT_KEY}:{slot}:0", "garbage")
    replayed.sync(optuna.load_study(study_name="window", storage=storage))
    assert _same_parameters(replayed.parameters(), first.parameters())
    assert list(replayed._live.rewards) == list(ctl.rewards)


def test_the_replay_queue_keeps_the_k_best_distinct_trajectories_with_mean_rewards():
    from archlab.search.samplers._config import ReinforceConfig
    from archlab.search.samplers._controller import Controller

    ctl = Controller(ReinforceConfig(replay_top_k=2), seed=0)
    a, b, c = ([("x", 3, i)] for i in range(3))
    for seq, reward in ((a, 1.0), (b, 3.0), (c, 2.0), (b, 1.0)):
        ctl.apply(seq, reward)
    # b's two rewards average to 2.0, tying c: the earlier entry (b) ranks first; a is out
    assert list(ctl._enqueue(c, 2.0)) == [((("x", 3, 1),)), ((("x", 3, 2),))]
    assert ctl.top[(("x", 3, 1),)][:2] == (2.0, 2)
    assert Controller(ReinforceConfig(replay_top_k=0), seed=0)._enqueue(a, 1.0) == []  # off


def test_replay_pulls_the_policy_towards_the_queue():
    from archlab.search.samplers._config import ReinforceConfig
    from archlab.search.samplers._controller import Controller

    seq = [("x", 5, 3), ("y", 5, 1)]
    plain, replay = (Controller(ReinforceConfig(replay_top_k=k), seed=0) for k in (0, 4))
    for ctl in (plain, replay):
        ctl.apply(seq, 1.0)  # the first reward has advantage 0: only the replay term moves it
    with torch.no_grad():
        assert float(replay.score(seq)[0]) > float(plain.score(seq)[0]) + 0.01


def test_marginal_replay_recombines_the_queue_and_keeps_a_floor():
    from archlab.search.samplers._config import ReinforceConfig
    from archlab.search.samplers._controller import Controller

    # two queued trajectories, (0, 0) and (1, 1): fitting the sequences ties y to x,
    # fitting the marginals makes y's distribution the same whatever x was
    records = [([("x", 3, 0), ("y", 3, 0)], 1.0), ([("x", 3, 1), ("y", 3, 1)], 1.0)]
    ctls = {t: Controller(ReinforceConfig(replay_top_k=2, replay_fraction=None, replay_target=t,
                                          lr=0.02, advantage="raw"), seed=0)
            for t in ("sequence", "marginal")}
    for ctl in ctls.values():
        for _ in range(60):
            for seq, reward in records:
                ctl.apply(seq, reward)  # equal rewards: only the replay term moves the policy

    def p_y(ctl, x):
        with torch.no_grad():
            h, c, _ = ctl.step(ctl.begin(), "x", 3)
            return ctl.step((h, c, ctl.token("x", x)), "y", 3)[2].exp()

    seq0, seq1 = p_y(ctls["sequence"], 0), p_y(ctls["sequence"], 1)
    assert seq0[0] > 0.9 and seq1[1] > 0.9  # the joint: y copies x
    mar0, mar1 = p_y(ctls["marginal"], 0), p_y(ctls["marginal"], 1)
    target = torch.tensor([1 + 1 / 3, 1 + 1 / 3, 1 / 3]) / 3  # counts 1, 1, 0 + prior 1 spread
    assert torch.allclose(mar0, target, atol=0.03) and torch.allclose(mar1, target, atol=0.03)
    with pytest.raises(ValueError, match="replay_target"):
        ReinforceConfig(replay_target="joint")
    with pytest.raises(ValueError, match="replay_prior"):
        ReinforceConfig(replay_prior=-1.0)


def test_replay_fraction_replays_only_the_best_share_of_the_rewards_seen():
    from archlab.search.samplers._config import ReinforceConfig
    from archlab.search.samplers._controller import Controller

    # a quarter of at most 4 rewards is 1 trajectory: the best so far, as a queue of 1
    share = Controller(ReinforceConfig(replay_top_k=4, replay_fraction=0.25), seed=0)
    one = Controller(ReinforceConfig(replay_top_k=1), seed=0)
    for ctl in (share, one):
        for i, reward in enumerate((1.0, 3.0, 2.0, 0.0)):
            ctl.apply([("x", 5, i), ("y", 5, 4 - i)], reward)
    assert len(share.top) == 4  # the queue keeps 4; only the replayed share is smaller
    assert _same_parameters(share.params, one.params)


def test_the_step_drops_to_late_lr_once_the_replay_phase_is_over():
    from archlab.search.samplers._config import ReinforceConfig
    from archlab.search.samplers._controller import Controller

    records = [([("x", 5, i % 5), ("y", 5, (2 * i) % 5)], float(i % 3)) for i in range(4)]
    same, late = (Controller(ReinforceConfig(replay_updates=3, late_lr=lr), seed=0)
                  for lr in (None, 1e-9))
    for ctl in (same, late):
        for seq, reward in records[:3]:
            ctl.apply(seq, reward)
    assert _same_parameters(same.params, late.params)  # the replay phase uses lr
    before = {k: t.detach().clone() for k, t in late.params.items()}
    for ctl in (same, late):
        ctl.apply(*records[3])

    def moved(ctl):
        return max(float((ctl.params[k].detach() - before[k]).abs().max()) for k in before)

    assert moved(late) < 1e-8  # a step of ~1e-9 per weight
    assert moved(same) > 1e-4


def test_the_replay_queue_survives_a_resume_and_workers_agree(tmp_path):
    storage = _sqlite(tmp_path)
    options = {"replay_top_k": 4, "snapshot_every": 5}
    first = ReinforceSampler(seed=3, **options)
    study = optuna.create_study(study_name="replay", storage=storage, direction="maximize",
                                sampler=first)
    study.optimize(_toy(_target(3), seed=3), n_trials=12)
    queue = dict(first._live.top)
    assert len(queue) == 4
    resumed = ReinforceSampler(seed=4, **options)  # a new process: snapshot at 10 + 2 records
    resumed.sync(optuna.load_study(study_name="replay", storage=_sqlite(tmp_path)))
    assert resumed._live.top == queue
    assert _same_parameters(resumed.parameters(), first.parameters())
    for slot in (0, 1):
        storage.set_study_system_attr(study._study_id, f"{_store.SNAPSHOT_KEY}:{slot}:0", "garbage")
    replayed = ReinforceSampler(seed=5, **options)  # no snapshot: the queue is rebuilt from the log
    replayed.sync(optuna.load_study(study_name="replay", storage=storage))
    assert replayed._live.top == queue
    assert _same_parameters(replayed.parameters(), first.parameters())


def test_a_seeded_search_with_replay_is_deterministic():
    runs = []
    for _ in range(2):
        sampler = ReinforceSampler(seed=9, replay_top_k=3)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(_toy(_target(9), seed=9), n_trials=15)
        runs.append(([t.params for t in study.trials], sampler.parameters()))
    assert runs[0][0] == runs[1][0] and _same_parameters(runs[0][1], runs[1][1])


def test_a_format_1_snapshot_is_not_read():
    import io

    from archlab.search.samplers._config import ReinforceConfig
    from archlab.search.samplers._controller import Controller

    blob = torch.load(io.BytesIO(Controller(ReinforceConfig(), 0).to_bytes()), weights_only=True)
    blob["format"] = 1
    del blob["rewards"]
    buf = io.BytesIO()
    torch.save(blob, buf)
    with pytest.raises(ValueError, match="format"):
        Controller.from_bytes(buf.getvalue(), ReinforceConfig())


def _small(trial: optuna.Trial) -> float:  # 3 x 3 = 9 candidates
    a = trial.suggest_categorical("a", [0, 1, 2])
    return float(a + trial.suggest_int("b", 0, 2))


def test_no_candidate_is_proposed_twice_until_the_space_is_exhausted():
    sampler = ReinforceSampler(seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_small, n_trials=9)
    cells = [(t.params["a"], t.params["b"]) for t in study.trials]
    assert len(set(cells)) == 9
    study.optimize(_small, n_trials=3)  # exhausted: sampling goes on, from the policy
    assert len(study.trials) == 12 and sampler.update_count == 12
    plain = optuna.create_study(direction="maximize",
                                sampler=ReinforceSampler(seed=0, avoid_duplicates=False))
    plain.optimize(_small, n_trials=9)
    assert len({(t.params["a"], t.params["b"]) for t in plain.trials}) < 9


def test_duplicates_are_avoided_across_workers_and_only_change_the_draws(tmp_path):
    storage = _sqlite(tmp_path)
    a, b = ReinforceSampler(seed=10), ReinforceSampler(seed=11)
    study_a = optuna.create_study(study_name="d", storage=storage, direction="maximize", sampler=a)
    study_b = optuna.load_study(study_name="d", storage=_sqlite(tmp_path), sampler=b)
    for _ in range(3):
        study_a.optimize(_small, n_trials=2)
        study_b.optimize(_small, n_trials=1)
    cells = [(t.params["a"], t.params["b"]) for t in study_a.trials]
    assert len(cells) == len(set(cells)) == 9
    a.sync(study_a)
    b.sync(study_b)
    replayed = ReinforceSampler(seed=12, avoid_duplicates=False)  # the same records, same weights
    replayed.sync(study_a)
    assert a.update_count == replayed.update_count == 9
    assert _same_parameters(a.parameters(), b.parameters())
    assert _same_parameters(a.parameters(), replayed.parameters())


def test_off_grid_and_fallback_trials_do_not_count_as_taken():
    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_float("x", 0.0, 1.0)

    sampler = ReinforceSampler(seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({"x": 0.123})  # not a grid point: the controller never proposes it
    study.optimize(objective, n_trials=1)
    sampler.sync(study)
    assert not sampler._tree.children
    study.optimize(objective, n_trials=1)
    sampler.sync(study)
    assert sampler._tree.children  # a grid point the controller chose
    fallback = ReinforceSampler(seed=0, numeric="fallback")
    study = optuna.create_study(direction="maximize", sampler=fallback)
    study.optimize(lambda t: t.suggest_categorical("a", [0, 1]) + objective(t), n_trials=3)
    fallback.sync(study)
    assert not fallback._tree.children


def test_failed_candidates_may_be_proposed_again_pruned_ones_not():
    def half(trial: optuna.Trial) -> float:
        value = _small(trial)
        if trial.params["a"] == 0:
            raise RuntimeError("out of memory")
        if trial.params["a"] == 1:
            raise optuna.TrialPruned()
        return value

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.create_study(direction="maximize", sampler=ReinforceSampler(seed=0))
        study.optimize(half, n_trials=30, catch=(RuntimeError,))
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    by_state: dict[str, list] = {}
    for t in study.trials:
        by_state.setdefault(t.state.name, []).append((t.params["a"], t.params["b"]))
    for state in ("COMPLETE", "PRUNED"):  # a = 2 and a = 1: at most once each
        assert len(by_state[state]) == len(set(by_state[state])) <= 3
    assert len(by_state["FAIL"]) >= 24 and len(set(by_state["FAIL"])) <= 3  # a = 0, again and again


# ------------------------------------------------------------- regularized evolution
def test_evolution_samples_randomly_until_the_population_is_full_then_mutates_one_decision():
    sampler = RegularizedEvolutionSampler(population_size=10, sample_size=3, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_toy(_target(0)), n_trials=40)
    trials = study.trials
    assert all(LINEAGE_KEY not in t.system_attrs for t in trials[:10])
    for child in trials[10:]:
        lineage = child.system_attrs[LINEAGE_KEY]
        parent = trials[lineage["parent"]]
        assert parent.number >= child.number - 10  # among the last P completed
        changed = [k for k in child.params if child.params[k] != parent.params[k]]
        assert changed == [lineage["mutated"]]


def test_evolution_is_stateless_across_sampler_instances(tmp_path):
    storage = _sqlite(tmp_path)
    study = optuna.create_study(study_name="evo", storage=storage, direction="maximize",
                                sampler=RegularizedEvolutionSampler(seed=0))
    study.optimize(_toy(_target(0)), n_trials=10)
    resumed = optuna.load_study(study_name="evo", storage=storage,
                                sampler=RegularizedEvolutionSampler(seed=1))
    resumed.optimize(_toy(_target(0)), n_trials=1)
    assert resumed.trials[-1].system_attrs[LINEAGE_KEY]["parent"] < 10


# ------------------------------------------------------------------- make_sampler
@pytest.mark.parametrize("name,cls", [
    ("random", optuna.samplers.RandomSampler), ("tpe", optuna.samplers.TPESampler),
    ("nsga2", optuna.samplers.NSGAIISampler), ("evolution", RegularizedEvolutionSampler),
    ("reinforce", ReinforceSampler),
])
def test_make_sampler_builds_each_named_sampler(name, cls):
    assert isinstance(make_sampler(name, seed=0), cls)


def test_make_sampler_passes_options():
    assert make_sampler("reinforce", seed=0, hidden_size=100).config.hidden_size == 100
    assert make_sampler("evolution", population_size=20)._p == 20


def test_an_unknown_sampler_name_suggests_the_closest():
    with pytest.raises(ArchlabError, match="unknown sampler 'reinfroce'; did you mean 'reinforce'"):
        make_sampler("reinfroce")


def test_an_unknown_option_names_the_accepted_ones():
    with pytest.raises(ArchlabError, match="takes no option 'hiden_size'.*hidden_size"):
        make_sampler("reinforce", hiden_size=10)
