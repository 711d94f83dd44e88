"""Chaos: ``archlab search`` workers SIGKILLed at chosen and random points -- inside
``ask`` (the trial RUNNING, the sampler at work), inside the evaluation, anywhere --
on SQLite, a journal file and PostgreSQL (``ARCHLAB_TEST_POSTGRES_URL``, see
``.ci/postgres.sh``). After every round, fresh workers finish the study, and:

* it holds exactly N finished trials, within a time bound (no hang, no stuck study);
* no trial is run twice: trial numbers are distinct, and each killed trial has at
  most one retry that finished (a retry copies its original's parameters);
* every COMPLETE trial holds all its attrs and its value is its recorded reward;
* every other trial is FAIL: a killed worker's (stale) trial or a surplus one.

The workers run NAS-Bench-201 (tabular rewards) through a space file that adds a
sleep to ``ask`` and to the evaluation, for the victims only, and leaves a marker
there so the test knows where a worker is when it kills it. A worker is a child
forked from the test process running ``archlab search`` (``main(argv)``), so
it starts in milliseconds with archlab and the NAS-Bench-201 table loaded. The default run kills
6 workers per storage (about 15-30 s per storage on a busy 2-core machine);
``-m slow`` kills 3 workers in each of 20 rounds per storage (``ARCHLAB_CHAOS_ROUNDS``).
"""
from __future__ import annotations

import os
import random
import signal
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from archlab.search.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
POSTGRES_URL = os.environ.get("ARCHLAB_TEST_POSTGRES_URL")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
RECORDED = {"arch", "params", "macs", "memory", "rf", "reward", "eval_s", "overhead_s", "worker"}
HEARTBEAT = ("--heartbeat-interval", "1", "--grace-period", "2")
BOUND_S = 90.0  # a round's rescue must finish within this (grace 2 s; startup ~3 s on a busy machine)

SPACE = '''"""NAS-Bench-201 with markers and sleeps for the chaos test"""
import os, time
import optuna
from search_spaces import get_space

_NB = get_space("nasbench201")
_DIR = os.environ.get("CHAOS_DIR")


def _mark(where):
    with open(os.path.join(_DIR, f"{where}-{os.getpid()}"), "a") as f:
        f.write("x")
    time.sleep(float(os.environ.get(f"CHAOS_{where.upper()}_S", "0")))


_before = optuna.samplers.RandomSampler.before_trial


def _before_trial(self, study, trial):  # inside study.ask(): the trial is RUNNING already
    if not isinstance(study._storage, optuna.storages.InMemoryStorage):  # not the space's dry run
        _mark("ask")
    return _before(self, study, trial)


optuna.samplers.RandomSampler.before_trial = _before_trial


def space(trial):
    return _NB.fn(trial)


def evaluator(**options):
    inner = _NB.evaluator(**options)

    def reward(trial, graph):
        _mark("eval")
        return inner(trial, graph)
    return reward
'''


class Forked:
    """``archlab <argv>`` in a child forked from this process (a ``Popen`` look-alike):
    environment ``env`` added, stdout and stderr to files."""

    def __init__(self, argv: list[str], env: dict[str, str], out: Path) -> None:
        self._out, self._err = out.with_suffix(".out"), out.with_suffix(".err")
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid == 0:  # the worker
            code = 1
            try:
                os.environ.update(env)
                for fd, path in ((1, self._out), (2, self._err)):
                    f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(f, fd)
                sys.stdout = open(1, "w", closefd=False)
                sys.stderr = open(2, "w", closefd=False)
                import torch

                torch.set_num_threads(1)
                from archlab.cli.main import main

                code = main(argv)
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def communicate(self, timeout: float) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.01)
        return self._out.read_text(), self._err.read_text()

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


@pytest.fixture(autouse=True, scope="module")
def _warm():
    """Load what every worker needs once, before the forks (the NAS-Bench-201 table)."""
    from search_spaces import get_space

    get_space("nasbench201").evaluator()
    import archlab.cli.main  # noqa: F401
    import archlab.search.engine  # noqa: F401


class Chaos:
    """One study under chaos: starts workers, kills them, checks the result."""

    def __init__(self, tmp_path: Path, storage: str, n: int) -> None:
        self.dir = tmp_path / "marks"
        self.dir.mkdir()
        self.space = tmp_path / "chaos_space.py"
        self.space.write_text(SPACE)
        self.storage, self.n, self.study = storage, n, f"chaos-{uuid.uuid4().hex[:8]}"
        self.kills: dict[str, int] = {}
        self.rng = random.Random(int(os.environ.get("ARCHLAB_CHAOS_SEED", "0")))
        self.seed = 0

    def start(self, *, ask_s: float = 0.0, eval_s: float = 0.0) -> "Forked":
        self.seed += 1
        env = {"CHAOS_DIR": str(self.dir), "CHAOS_ASK_S": str(ask_s), "CHAOS_EVAL_S": str(eval_s)}
        argv = ["search", "--space", str(self.space), "--sampler", "random", "--n-trials", str(self.n),
                "--storage", self.storage, "--study", self.study, "--seed", str(self.seed), "--quiet", *HEARTBEAT]
        return Forked(argv, env, self.dir / f"out-{self.seed}")

    def marks(self, where: str, proc: "Forked") -> int:
        path = self.dir / f"{where}-{proc.pid}"
        return path.stat().st_size if path.exists() else 0

    def kill_at(self, proc: "Forked", where: str, count: int, timeout: float = 60.0) -> bool:
        """SIGKILL ``proc`` once it is in its ``count``-th ``where`` (ask/eval); False if it ended first."""
        deadline = time.monotonic() + timeout
        while self.marks(where, proc) < count:
            if proc.poll() is not None or time.monotonic() > deadline:
                return self._reap(proc, killed=False)
            time.sleep(0.005)
        return self._kill(proc, where)

    def kill_after(self, proc: "Forked", seconds: float) -> bool:
        """SIGKILL ``proc`` ``seconds`` after its first ``ask`` (anywhere: ask, evaluation, storage)."""
        deadline = time.monotonic() + 60
        while self.marks("ask", proc) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(seconds)
        return self._kill(proc, "anywhere")

    def _kill(self, proc: "Forked", where: str) -> bool:
        if proc.poll() is not None:
            return self._reap(proc, killed=False)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        self.kills[where] = self.kills.get(where, 0) + 1
        return True

    @staticmethod
    def _reap(proc: "Forked", killed: bool) -> bool:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "Traceback" not in err, err
        return killed

    def finish(self, workers: int = 2, bound: float = BOUND_S) -> float:
        """Fresh workers finish the study within ``bound`` seconds; returns the seconds they took."""
        start = time.monotonic()
        procs = [self.start() for _ in range(workers)]
        for p in procs:
            try:
                out, err = p.communicate(timeout=max(1.0, bound - (time.monotonic() - start)))
            except TimeoutError:
                for q in procs:
                    q.kill()
                pytest.fail(f"the study did not finish within {bound} s: {self.describe()}")
            assert p.returncode == 0 and "Traceback" not in err, err
            assert f"{self.n}/{self.n} finished trials" in out, out
        return time.monotonic() - start

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        storage = open_storage(self.storage, heartbeat_interval=None)
        return optuna.load_study(study_name=self.study, storage=storage).get_trials()

    def describe(self) -> str:
        return ", ".join(f"{t.number}:{t.state.name}" for t in self.trials())

    def check(self) -> list[optuna.trial.FrozenTrial]:
        trials = self.trials()
        finished = [t for t in trials if t.state in FINISHED]
        assert len(finished) == self.n, self.describe()
        assert sorted(t.number for t in trials) == list(range(len(trials)))  # distinct, dense
        for t in finished:
            assert t.state == TrialState.COMPLETE, t
            assert RECORDED <= set(t.user_attrs), (t.number, sorted(t.user_attrs))
            assert t.value == pytest.approx(t.user_attrs["reward"])
        by_number = {t.number: t for t in trials}
        retried: dict[int, int] = {}
        for t in finished:
            if "failed_trial" in t.system_attrs:
                original = by_number[t.system_attrs["failed_trial"]]
                # a retry runs its original's params (those sampled before the kill; the rest anew)
                assert original.params.items() <= t.params.items(), (original.number, t.number)
                retried[original.number] = retried.get(original.number, 0) + 1
        assert all(count == 1 for count in retried.values()), retried  # a killed trial finished at most once
        for t in trials:
            if t.state not in FINISHED:
                assert t.state == TrialState.FAIL, t
        return trials


def _postgres_or_skip() -> None:
    if not POSTGRES_URL:
        message = "set ARCHLAB_TEST_POSTGRES_URL (e.g. from .ci/postgres.sh) to run the chaos test on PostgreSQL"
        if os.environ.get("ARCHLAB_REQUIRE_POSTGRES"):
            pytest.fail(message)
        pytest.skip(message)


def _url(kind: str, tmp_path: Path) -> str:
    if kind == "postgresql":
        _postgres_or_skip()
        return POSTGRES_URL
    return f"sqlite:///{tmp_path}/chaos.db" if kind == "sqlite" else f"journal:{tmp_path}/chaos.log"


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_workers_killed_inside_ask_and_evaluation_leave_exactly_n_trials(tmp_path, kind, capsys):
    chaos = Chaos(tmp_path, _url(kind, tmp_path), n=24)
    # round 1: two workers; one dies inside its 2nd ask, the other inside its 3rd evaluation
    a, b = chaos.start(ask_s=0.4), chaos.start(eval_s=0.4)
    assert chaos.kill_at(a, "ask", 2)
    assert chaos.kill_at(b, "eval", 3)
    # round 2: the same while the first round's trials are stale and their retries queued
    a, b = chaos.start(ask_s=0.4), chaos.start(eval_s=0.4)
    assert chaos.kill_at(a, "ask", 1)
    assert chaos.kill_at(b, "eval", 1)
    # round 3: two at random moments (ask, evaluation, storage writes, heartbeats)
    a, b = chaos.start(ask_s=0.15, eval_s=0.15), chaos.start(ask_s=0.15, eval_s=0.15)
    assert chaos.kill_after(a, chaos.rng.uniform(0.0, 1.0))
    assert chaos.kill_after(b, chaos.rng.uniform(0.0, 1.0))
    took = chaos.finish()
    trials = chaos.check()
    failed = sum(t.state == TrialState.FAIL for t in trials)
    with capsys.disabled():
        print(f"\nchaos[{kind}]: {sum(chaos.kills.values())} kills {chaos.kills}; {chaos.n}/{chaos.n} finished, "
              f"{failed} failed (killed or surplus), rescue {took:.1f} s")
    assert sum(chaos.kills.values()) == 6


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_many_rounds_of_random_kills_leave_exactly_n_trials(tmp_path, kind, capsys):
    # every worker of every round is killed (the study is too big to finish between kills)
    chaos = Chaos(tmp_path, _url(kind, tmp_path), n=600)
    rounds = int(os.environ.get("ARCHLAB_CHAOS_ROUNDS", "20"))
    for _ in range(rounds):
        procs = [chaos.start(ask_s=chaos.rng.choice([0.02, 0.1, 0.3]), eval_s=chaos.rng.choice([0.02, 0.1, 0.3]))
                 for _ in range(3)]
        for p in procs:
            mode = chaos.rng.choice(["ask", "eval", "anywhere"])
            if mode == "anywhere":
                assert chaos.kill_after(p, chaos.rng.uniform(0.0, 1.5))
            else:
                assert chaos.kill_at(p, mode, chaos.rng.randint(1, 4))
    took = chaos.finish(workers=3, bound=300.0)  # ~550 trials to run, a journal file is slow
    trials = chaos.check()
    with capsys.disabled():
        print(f"\nchaos-slow[{kind}]: {rounds} rounds, {sum(chaos.kills.values())} kills {chaos.kills}; "
              f"{chaos.n}/{chaos.n} finished, {sum(t.state == TrialState.FAIL for t in trials)} failed, "
              f"rescue {took:.1f} s")
    assert sum(chaos.kills.values()) == 3 * rounds
