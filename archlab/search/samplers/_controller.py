"""The REINFORCE controller: an LSTM policy over named decisions, its Adam and reward statistics.

The policy follows Zoph & Le (ICLR 2017): one LSTM step per decision, one softmax
per decision, and the sampled token's embedding fed to the next step. Decisions
are identified by a *key* (parameter name plus a hash of its distribution), and
every per-key tensor (token embeddings, a decision query vector, the softmax
head) is created on first use from a generator seeded by ``(seed, tensor name)``.
So two controllers built from the same seed agree on every tensor no matter in
which order they discover the keys, and replaying the same update records on
them gives bit-identical weights (on the same hardware). That is what lets the
sampler keep the controller's state in the study as an update log plus
occasional snapshots (see ``reinforce.py``).

Adam is written out here, keyed by tensor name, because the set of tensors grows
while the search runs; ``torch.optim.Adam`` keys its state by position, which
would differ between workers that met the keys in different orders.
"""
from __future__ import annotations

import bisect
import contextlib
import io
import math
import zlib
from collections import deque
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from archlab.search.samplers import _acquisition
from archlab.search.samplers._config import ReinforceConfig

DecisionKey = str
# One step of a trajectory: (decision key, number of choices, chosen index).
Decision = tuple[DecisionKey, int, int]

_BETAS = (0.9, 0.999)  # Adam's defaults (Kingma & Ba); ENAS and Zoph & Le keep them
_EPS = 1e-8
_FORMAT = 4  # of to_bytes; 2 added the reward window, 3 the replay queue, 4 the choice counts
_SHARED = ("lstm.w_ih", "lstm.w_hh", "lstm.b", "start")
_PER_KEY = ("emb", "query", "head_w", "head_b")


@contextlib.contextmanager
def _one_thread():
    """Run the batched replay on the calling thread only: BLAS hands a (k, h) x (h, 4h)
    product to its thread pool, whose wake-ups cost ~40x the product on a busy machine."""
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


class Controller:
    """The policy's weights, its Adam moments, the reward baseline and its position in the log.

    Attributes:
        config: The hyperparameters.
        seed: Seeds every tensor's initial value; controllers sharing a study share it.
        params: Tensor name -> weight (leaf tensors that require grad).
        count: Number of updates applied (one per trial record).
        upto: Trial-number watermark of the update log this state was built from;
            written by the sampler, which owns the meaning (see ``reinforce.py``).
        baseline: EMA of past rewards, ``None`` before the first update.
        rewards: The last ``reward_window`` rewards, oldest first (for the
            "zscore" and "rank" advantages).
        top: The replay queue: trajectory -> ``(mean reward, times seen, first
            update count)``, at most ``replay_top_k`` entries (see :meth:`_enqueue`).
        counts: Decision key -> how often each choice occurs in the records applied
            (the "above" side of ``replay_target="tpe"``).
    """

    def __init__(self, config: ReinforceConfig, seed: int) -> None:
        self.config = config
        self.seed = int(seed)
        self.params: dict[str, torch.Tensor] = {}
        self.m: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}
        self.steps: dict[str, int] = {}
        self.count = 0
        self.upto = 0
        self.baseline: float | None = None
        self.rewards: deque[float] = deque(maxlen=config.reward_window)
        self.top: dict[tuple[Decision, ...], tuple[float, int, int]] = {}
        self.counts: dict[DecisionKey, np.ndarray] = {}
        h = config.hidden_size
        for name, shape in zip(_SHARED, ((4 * h, h), (4 * h, h), (4 * h,), (h,))):
            self.params[name] = self._initial(name, shape)

    # ----------------------------------------------------------------- tensors
    def _initial(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        gen = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}:{name}".encode()))
        r = self.config.init_range
        t = torch.rand(shape, generator=gen, dtype=torch.float32) * (2 * r) - r
        return t.requires_grad_(True)

    def ensure(self, key: DecisionKey, n: int) -> None:
        """Create the tensors of decision ``key`` with ``n`` choices if they are missing."""
        if f"head_b.{key}" in self.params:
            have = self.params[f"head_b.{key}"].shape[0]
            if have != n:
                raise ValueError(f"decision {key!r} has {have} choices, asked for {n}")
            return
        h = self.config.hidden_size
        for part, shape in zip(_PER_KEY, ((n, h), (h,), (n, h), (n,))):
            self.params[f"{part}.{key}"] = self._initial(f"{part}.{key}", shape)

    def clone(self) -> Controller:
        """A deep copy; updating it leaves ``self`` untouched."""
        other = Controller.__new__(Controller)
        other.config, other.seed = self.config, self.seed
        other.params = {k: t.detach().clone().requires_grad_(True) for k, t in self.params.items()}
        other.m = {k: t.clone() for k, t in self.m.items()}
        other.v = {k: t.clone() for k, t in self.v.items()}
        other.steps = dict(self.steps)
        other.count, other.upto, other.baseline = self.count, self.upto, self.baseline
        other.rewards = deque(self.rewards, maxlen=self.rewards.maxlen)
        other.top = dict(self.top)
        other.counts = {k: c.copy() for k, c in self.counts.items()}
        return other

    # ------------------------------------------------------------------ policy
    def begin(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The recurrent state ``(h, c, x)`` before the first decision of a trajectory."""
        h = self.config.hidden_size
        return torch.zeros(h), torch.zeros(h), self.params["start"]

    def step(
        self, state: tuple[torch.Tensor, torch.Tensor, torch.Tensor], key: DecisionKey, n: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One LSTM step for decision ``key``; returns ``(h, c, log_probs over n choices)``."""
        self.ensure(key, n)
        p = self.params
        h, c, x = state
        x = x + p[f"query.{key}"]  # tells the cell *which* decision it is making
        gates = F.linear(x, p["lstm.w_ih"], p["lstm.b"]) + F.linear(h, p["lstm.w_hh"])
        i, f, g, o = gates.chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        logits = F.linear(h, p[f"head_w.{key}"], p[f"head_b.{key}"]) / self.config.temperature
        if self.config.tanh_constant is not None:
            logits = self.config.tanh_constant * torch.tanh(logits)
        return h, c, F.log_softmax(logits, dim=-1)

    def token(self, key: DecisionKey, index: int) -> torch.Tensor:
        """The embedding of choice ``index`` of ``key``: the next step's input."""
        return self.params[f"emb.{key}"][index]

    def score(self, decisions: Sequence[Decision]) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced ``(log-probability, summed entropy)`` of a whole trajectory."""
        h, c, x = self.begin()
        logp = torch.zeros(())
        entropy = torch.zeros(())
        for key, n, index in decisions:
            h, c, logq = self.step((h, c, x), key, n)
            logp = logp + logq[index]
            entropy = entropy - (logq.exp() * logq).sum()
            x = self.token(key, index)
        return logp, entropy

    def score_many(self, seqs: Sequence[Sequence[Decision]],
                   targets: dict[DecisionKey, torch.Tensor] | None = None) -> torch.Tensor:
        """The summed log-probability of several trajectories, teacher-forced.

        With ``targets`` (decision key -> a distribution over its choices), each
        step scores the expected log-probability under that key's target instead
        of the trajectory's own choice (the prefix stays teacher-forced).

        Trajectories with the same decisions in the same order (most of a fixed
        space's) run as one batch through the LSTM, so replaying a queue of k costs
        about one trajectory's steps, not k.
        """
        groups: dict[tuple[tuple[DecisionKey, int], ...], list[Sequence[Decision]]] = {}
        for seq in seqs:
            groups.setdefault(tuple((k, n) for k, n, _ in seq), []).append(seq)
        p, total = self.params, torch.zeros(())
        for shape, group in groups.items():
            b = len(group)
            h = torch.zeros(b, self.config.hidden_size)
            c, x = torch.zeros_like(h), p["start"].expand(b, -1)
            for j, (key, n) in enumerate(shape):
                self.ensure(key, n)
                x = x + p[f"query.{key}"]
                gates = F.linear(x, p["lstm.w_ih"], p["lstm.b"]) + F.linear(h, p["lstm.w_hh"])
                i, f, g, o = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                logits = F.linear(h, p[f"head_w.{key}"], p[f"head_b.{key}"]) / self.config.temperature
                if self.config.tanh_constant is not None:
                    logits = self.config.tanh_constant * torch.tanh(logits)
                index = torch.tensor([seq[j][2] for seq in group])
                logq = F.log_softmax(logits, dim=-1)
                if targets is not None and key in targets:
                    total = total + (logq * targets[key]).sum()
                else:
                    total = total + logq.gather(1, index[:, None]).sum()
                x = p[f"emb.{key}"][index]
        return total

    # ------------------------------------------------------------------ update
    def advantage(self, reward: float) -> float:
        """The advantage of ``reward`` given the rewards applied so far (see ``ReinforceConfig``).

        The first reward has advantage 0 (it initialises the baseline), so the first
        update only carries the entropy bonus.
        """
        reward = float(reward)
        if self.baseline is None or not self.rewards:
            return 0.0
        mode = self.config.advantage
        if mode == "raw":
            return reward - self.baseline
        if mode == "zscore":
            n = len(self.rewards)
            mean = math.fsum(self.rewards) / n
            var = math.fsum((r - mean) ** 2 for r in self.rewards) / n
            return 0.0 if var <= 0.0 else (reward - self.baseline) / math.sqrt(var)
        ordered = sorted(self.rewards)
        below = bisect.bisect_left(ordered, reward)
        ties = bisect.bisect_right(ordered, reward) - below
        return 2.0 * (below + 0.5 * ties) / len(ordered) - 1.0

    def apply(self, decisions: Sequence[Decision], reward: float) -> None:
        """REINFORCE steps on a trajectory with its reward; increments ``count``.

        The advantage (:meth:`advantage`) compares the reward with those *before* it;
        then the baseline moves towards the reward and the reward joins the window.
        With ``replay_top_k`` the trajectory enters the replay queue first, and each
        step also raises the queue's mean log-likelihood (with ``replay_target="marginal"``
        the expected log-likelihood under the queue's smoothed per-decision
        distribution, :meth:`_marginals`). ``updates_per_record``
        Adam steps are taken, each on a fresh gradient.
        """
        cfg = self.config
        reward = float(reward)
        if decisions:
            for key, n, index in decisions:
                self.counts.setdefault(key, np.zeros(n))[index] += 1.0
            advantage = self.advantage(reward)
            replay = self._enqueue(decisions, reward)
            late = cfg.replay_updates is not None and self.count >= cfg.replay_updates
            lr = cfg.late_lr if late and cfg.late_lr is not None else cfg.lr
            if late:
                replay = []
            elif cfg.replay_fraction is not None:  # n = count + 1 rewards, this one included
                replay = replay[:math.ceil(cfg.replay_fraction * (self.count + 1) - 1e-9)]
            targets = None
            if replay and cfg.replay_target == "marginal":
                targets = self._marginals(replay)
            elif replay and cfg.replay_target == "tpe":
                targets = self._proposals(replay)
            keys = dict.fromkeys(d[0] for seq in [decisions, *replay] for d in seq)
            names = list(_SHARED) + [f"{part}.{k}" for k in keys for part in _PER_KEY]
            for _ in range(cfg.updates_per_record):
                logp, entropy = self.score(decisions)
                loss = -advantage * logp - cfg.entropy_weight * entropy
                if replay:
                    with _one_thread():
                        loss = loss - cfg.replay_weight / len(replay) * self.score_many(replay, targets)
                        grads = torch.autograd.grad(loss, [self.params[n] for n in names],
                                                    allow_unused=True)
                else:
                    grads = torch.autograd.grad(loss, [self.params[n] for n in names],
                                                allow_unused=True)
                with torch.no_grad():
                    for name, grad in zip(names, grads):
                        if grad is not None:
                            self._adam(name, grad, lr)
        self.baseline = reward if self.baseline is None else (
            cfg.baseline_decay * self.baseline + (1.0 - cfg.baseline_decay) * reward)
        self.rewards.append(reward)
        self.count += 1

    def _queue_counts(self, queue: Sequence[Sequence[Decision]]) -> dict[DecisionKey, np.ndarray]:
        """Per decision key, how often the queue takes each choice (checked against its head)."""
        counts: dict[DecisionKey, np.ndarray] = {}
        for seq in queue:
            for key, n, index in seq:
                self.ensure(key, n)
                counts.setdefault(key, np.zeros(n))[index] += 1.0
        return counts

    def _marginals(self, queue: Sequence[Sequence[Decision]]) -> dict[DecisionKey, torch.Tensor]:
        """Per decision key, the queue's smoothed distribution of its choices
        (``replay_prior`` pseudo-counts spread evenly; see ``replay_target``)."""
        prior = self.config.replay_prior
        out = {}
        for key, c in self._queue_counts(queue).items():
            t = torch.from_numpy(c).float()
            out[key] = (t + prior / t.numel()) / (t.sum() + prior)
        return out

    def _proposals(self, queue: Sequence[Sequence[Decision]]) -> dict[DecisionKey, torch.Tensor]:
        """Per decision key, TPE's proposal distribution (``_acquisition.proposal``) with
        the queue as the below trials and every other record applied as the above ones."""
        prior = self.config.replay_prior
        return {key: torch.from_numpy(_acquisition.proposal(
                    c, np.maximum(self.counts[key] - c, 0.0), prior, self.config.replay_candidates)).float()
                for key, c in self._queue_counts(queue).items()}

    def _enqueue(self, decisions: Sequence[Decision], reward: float) -> list[tuple[Decision, ...]]:
        """Put a trajectory into the replay queue; return the queue, best first.

        A trajectory already queued keeps the mean of its rewards (a noisy reward
        seen again is averaged, not maxed). The queue keeps the ``replay_top_k``
        best means; ties go to the earlier entry. Deterministic in the records'
        order, so workers replaying the same log hold the same queue.
        """
        k = self.config.replay_top_k
        if k <= 0:
            return []
        seq = tuple(tuple(d) for d in decisions)
        mean, seen, first = self.top.get(seq, (0.0, 0, self.count))
        self.top[seq] = ((mean * seen + reward) / (seen + 1), seen + 1, first)
        order = sorted(self.top, key=lambda q: (-self.top[q][0], self.top[q][2]))
        for q in order[k:]:
            del self.top[q]
        return order[:k]

    def _adam(self, name: str, grad: torch.Tensor, lr: float) -> None:
        # In numpy, on views of the tensors: ATen hands element-wise sqrt/exp on
        # tensors of this size (16k) to OpenMP, whose wake-ups cost milliseconds
        # per op on a busy machine; numpy stays on the calling thread.
        b1, b2 = _BETAS
        if name not in self.m:
            self.m[name], self.v[name] = torch.zeros_like(grad), torch.zeros_like(grad)
        m, v = self.m[name].numpy(), self.v[name].numpy()
        g = grad.numpy()
        t = self.steps.get(name, 0) + 1
        self.steps[name] = t
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        step = (lr / (1 - b1**t)) * m / (np.sqrt(v / (1 - b2**t)) + _EPS)
        self.params[name].detach().numpy()[...] -= step.astype(np.float32, copy=False)

    # ------------------------------------------------------------ persistence
    def to_bytes(self) -> bytes:
        """Serialize the state (``torch.save``); tensors never updated are left out.

        An untouched tensor equals its seeded initial value, so leaving it out
        loses nothing and makes the bytes independent of which keys a worker met.
        """
        touched = sorted(self.steps)
        blob = {
            "format": _FORMAT, "seed": self.seed, "count": self.count, "upto": self.upto,
            "baseline": self.baseline, "rewards": list(self.rewards),
            "top": [[[list(d) for d in seq], *entry] for seq, entry in self.top.items()],
            "counts": {k: c.tolist() for k, c in sorted(self.counts.items())},
            "hidden": self.config.hidden_size,
            "params": {k: self.params[k].detach() for k in touched},
            "m": {k: self.m[k] for k in touched}, "v": {k: self.v[k] for k in touched},
            "steps": {k: self.steps[k] for k in touched},
        }
        buf = io.BytesIO()
        torch.save(blob, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, config: ReinforceConfig) -> Controller:
        """Inverse of :meth:`to_bytes`.

        Raises:
            ValueError: The bytes are from another format or another hidden size.
        """
        blob = torch.load(io.BytesIO(data), weights_only=True)
        if blob.get("format") != _FORMAT or blob.get("hidden") != config.hidden_size:
            raise ValueError("snapshot has another format or hidden size")
        ctl = cls(config, blob["seed"])
        params = blob["params"]
        for name, value in params.items():
            part, _, key = name.partition(".")
            if part in _PER_KEY:
                # every decision in a trajectory updates its head, so head_b is always there
                if f"head_b.{key}" not in params:
                    raise ValueError(f"snapshot lacks the head of decision {key!r}")
                ctl.ensure(key, params[f"head_b.{key}"].shape[0])
            ctl.params[name] = value.clone().requires_grad_(True)
        ctl.m = {k: t.clone() for k, t in blob["m"].items()}
        ctl.v = {k: t.clone() for k, t in blob["v"].items()}
        ctl.steps = {k: int(s) for k, s in blob["steps"].items()}
        ctl.count, ctl.upto, ctl.baseline = int(blob["count"]), int(blob["upto"]), blob["baseline"]
        ctl.rewards = deque((float(r) for r in blob["rewards"]), maxlen=config.reward_window)
        ctl.top = {tuple((str(k), int(n), int(i)) for k, n, i in seq): (float(m), int(s), int(f))
                   for seq, m, s, f in blob["top"]}
        ctl.counts = {str(k): np.asarray(c, dtype=np.float64) for k, c in blob["counts"].items()}
        return ctl

