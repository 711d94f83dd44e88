"""Faults inside training on a real device: named, and nothing left behind.

    python benchmarks/train_faults.py --device cuda     # (also runs on the CPU, without the OOM check)

Checks, printing one line each (exit 1 if any fails):

* **out of memory** (CUDA only): a batch far beyond the GPU's memory raises
  ``TrainOutOfMemoryError`` naming the batch size and archlab's predicted
  training memory; afterwards ``torch.cuda.memory_allocated`` is back where it
  was and a normal training in the same process works.
* **NaN loss**: an absurd learning rate raises ``NonFiniteLossError`` naming
  the step; the next training works.
* **determinism**: two trainings with the same seed give the same history
  (``deterministic=True`` on CUDA; the CPU always).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from archlab.train import NonFiniteLossError, TrainConfig, TrainOutOfMemoryError, load_data, train  # noqa: E402
from archlab.train.data import Split  # noqa: E402
from archlab.zoo import get_model  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    dev = p.parse_args().device
    cuda = dev.startswith("cuda")
    data = load_data("scenes:n=256,val=64", size=(64, 64))
    net = get_model("unet_small", num_classes=data.num_classes)
    ok = True

    def check(name: str, cond: bool, detail: str) -> None:
        nonlocal ok
        ok &= cond
        print(f"{'ok  ' if cond else 'FAIL'} {name}: {detail}", flush=True)

    base = dict(epochs=1, batch_size=32, device=dev)
    if cuda:
        before = torch.cuda.memory_allocated()
        big = get_model("unet_small", num_classes=data.num_classes, input_shape=(3, 1024, 1024))
        huge = dataclasses.replace(
            data, train=Split(torch.zeros(4096, 3, 1024, 1024, dtype=torch.uint8),
                              torch.zeros(4096, 1024, 1024, dtype=torch.uint8)),
            val=Split(torch.zeros(2, 3, 1024, 1024, dtype=torch.uint8), torch.zeros(2, 1024, 1024, dtype=torch.uint8)))
        try:
            train(big, huge, TrainConfig(**{**base, "batch_size": 2048, "steps": 1}), progress=False)
            check("out of memory", False, "no error raised")
        except TrainOutOfMemoryError as e:
            check("out of memory", "batch size 2048" in str(e) and "predicts" in str(e), str(e))
        del huge
        after = torch.cuda.memory_allocated()
        check("memory freed", after <= before + 1024**2, f"allocated {before:,} B before, {after:,} B after")
        r = train(net, data, TrainConfig(**base), progress=False)
        check("training after OOM", r.final["miou"] >= 0, f"mIoU {r.final['miou']:.3f}")
    try:
        train(net, data, TrainConfig(**{**base, "optimizer": "sgd", "lr": 1e12}), progress=False)
        check("NaN loss", False, "no error raised")
    except NonFiniteLossError as e:
        check("NaN loss", e.step >= 1, str(e))
    r = train(net, data, TrainConfig(**base), progress=False)
    check("training after NaN", r.final["miou"] >= 0, f"mIoU {r.final['miou']:.3f}")
    a, b = (train(net, data, TrainConfig(**{**base, "epochs": 2, "deterministic": True}), progress=False)
            for _ in range(2))
    same = [h.loss for h in a.history] == [h.loss for h in b.history] and a.final == b.final
    check("deterministic", same, f"losses {[h.loss for h in a.history]} vs {[h.loss for h in b.history]}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
