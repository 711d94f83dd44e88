"""Benchmark: does the embedded ``scenes`` task reward what the lecture says it should?

Run: ``python benchmarks/embedded_task.py [--device cpu|cuda] [--seeds 0,1,2] [--epochs 8]``
(prints a report; exits 0; ``--quick``: the reduced run of the slow test).

(a) **Receptive field.** Two fully convolutional stacks with the *same*
    parameters (same layers and widths, no pooling): ``local`` has dilation 1
    everywhere (field 2L + 1 pixels, much smaller than the large objects);
    ``context`` dilates its middle convs 1, 2, 4, 8, 16 (field covers the image).
    Only the field differs, so a higher mIoU for ``context`` is the field's doing.
(b) **Skip links.** The ``seg``-space encoder-decoder (depth 3, output stride 8,
    plain blocks, bilinear upsampling) with ``skip=none`` and ``skip=concat``:
    without links the decoder must rebuild edges from a stride-8 map; the
    boundary accuracy (pixels within 2 px of a label edge) shows what it loses.

Every net is an archlab graph trained by :func:`archlab.train.train` with its
defaults (``--loop plain``: the plain AdamW + cosine loop over ``to_module``
with flips only, the reference that found the trainer's earlier defaults slow);
mIoU, pixel accuracy and boundary accuracy (fp32) come from
:class:`archlab.metrics.ConfusionMatrix` on the validation split.
Each net runs over several seeds (data and initialisation both follow the seed);
the report gives mean +- std and the seeds.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from archlab.analysis.receptive_field import receptive_fields  # noqa: E402
from archlab.graph import Graph  # noqa: E402
from archlab.lang import GraphBuilder  # noqa: E402
from archlab.metrics import ConfusionMatrix  # noqa: E402
from archlab.torchio.compile import to_module  # noqa: E402
from archlab.train.data.embedded import load_scenes  # noqa: E402
from archlab.zoo.common import conv_bn  # noqa: E402
from search_spaces.seg import seg_graph  # noqa: E402

BAND = 2  # boundary band: pixels within this many px (Chebyshev) of a label change


def stack_graph(dilations: list[int], width: int, *, num_classes: int, input_shape: tuple[int, int, int],
                name: str) -> Graph:
    """A no-pool stack: one 3x3 conv-BN-ReLU per entry of ``dilations``, then a 1x1 classifier."""
    b = GraphBuilder(name)
    x = b.input(input_shape)
    for i, d in enumerate(dilations):
        x = conv_bn(b, x, width, 3, padding=d, dilation=d, names=(f"conv{i}", f"bn{i}"))
    b.output(b.conv2d(x, num_classes, 1, name="classifier"))
    return b.build()


SEG_BASE = {"depth": 3, "output_stride": 8, "base_width": 16, "width_growth": 2.0, "block": "plain",
            "kernel_size": 3, "upsample": "bilinear", "head": "none"}


def nets(num_classes: int, input_shape: tuple[int, int, int], width: int = 32, seg_width: int = 16,
         ) -> dict[str, Graph]:
    """The four nets of (a) and (b), by name: ``width`` channels in the (a) stacks,
    ``seg_width`` the encoder-decoders' ``base_width``."""
    seg = {**SEG_BASE, "base_width": seg_width}
    local = [1] * 7
    context = [1, 1, 2, 4, 8, 16, 1]
    return {
        "a.local": stack_graph(local, width, num_classes=num_classes, input_shape=input_shape, name="local"),
        "a.context": stack_graph(context, width, num_classes=num_classes, input_shape=input_shape, name="context"),
        "b.skip_none": seg_graph({**seg, "skip": "none"}, num_classes=num_classes, input_shape=input_shape),
        "b.skip_concat": seg_graph({**seg, "skip": "concat"}, num_classes=num_classes, input_shape=input_shape),
    }


def rf_size(graph: Graph) -> int:
    """Theoretical receptive field (pixels, H axis) of the output."""
    fields = receptive_fields(graph)
    rf = fields[next(iter(graph.outputs.values()))]
    size = rf.size[0] if isinstance(rf.size, (tuple, list)) else rf.size
    return int(size)


def boundary_band(target: torch.Tensor, band: int = BAND) -> torch.Tensor:
    """Pixels within ``band`` px of a label change: ``(N, H, W)`` bool."""
    t = target.float().unsqueeze(1)
    k = 2 * band + 1
    hi = F.max_pool2d(t, k, stride=1, padding=band)
    lo = -F.max_pool2d(-t, k, stride=1, padding=band)
    return (hi != lo).squeeze(1)


def _fit_plain(graph: Graph, data, *, epochs: int, seed: int, device: str, batch: int = 32, lr: float = 3e-3):
    """A plain loop (AdamW, warm-up + cosine, cross-entropy, flips): the reference the trainer replaced."""
    torch.manual_seed(seed)
    dev = torch.device(device)
    model = to_module(graph).to(dev).train()
    mean = torch.tensor(data.mean, device=dev).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=dev).view(1, -1, 1, 1)
    xs, ys = data.train.images.to(dev), data.train.targets.to(dev)
    n = xs.shape[0]
    steps_per_epoch = n // batch
    total = epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm
        else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(steps_per_epoch):
            idx = perm[s * batch:(s + 1) * batch].to(dev)
            x = (xs[idx].float() / 255 - mean) / std
            y = ys[idx].long()
            flip = torch.rand(batch, generator=gen).to(dev) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            y = torch.where(flip.view(-1, 1, 1), y.flip(2), y)
            loss = F.cross_entropy(model(x), y, ignore_index=255)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model


def _fit_archlab(graph: Graph, data, *, epochs: int, seed: int, device: str):
    """archlab's trainer (:func:`archlab.train.train`) with its defaults."""
    from archlab.train.config import TrainConfig
    from archlab.train.trainer import train

    return train(graph, data, TrainConfig(epochs=epochs, seed=seed, device=device), progress=False).module


def evaluate(model, data, device: str) -> dict[str, float]:
    """mIoU, pixel accuracy and boundary accuracy of ``model`` on the validation split (fp32)."""
    dev = torch.device(device)
    model = model.to(dev).float().eval()
    mean = torch.tensor(data.mean, device=dev).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=dev).view(1, -1, 1, 1)
    cm = ConfusionMatrix(data.num_classes, ignore_index=255)
    band_right = band_total = 0
    with torch.no_grad():
        for s in range(0, len(data.val), 128):
            x = (data.val.images[s:s + 128].to(dev).float() / 255 - mean) / std
            y = data.val.targets[s:s + 128].to(dev).long()
            pred = model(x.contiguous()).argmax(1)
            cm.update(pred.cpu(), y.cpu())
            edge = boundary_band(y)
            band_right += int(((pred == y) & edge).sum())
            band_total += int(edge.sum())
    return {"miou": cm.mean_iou(), "pixel_acc": cm.pixel_accuracy(), "boundary_acc": band_right / max(1, band_total)}


def train_eval(graph: Graph, data, *, epochs: int, seed: int, device: str, loop: str = "archlab") -> dict[str, float]:
    """Train ``graph`` briefly on ``data`` (``loop``: "archlab" or "plain") and evaluate it."""
    t0 = time.perf_counter()
    fit = _fit_archlab if loop == "archlab" else _fit_plain
    model = fit(graph, data, epochs=epochs, seed=seed, device=device)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    return {**evaluate(model, data, device), "train_s": train_s}


def untrained_floor(data) -> float:
    """mIoU of predicting background everywhere (what a net that learned nothing scores)."""
    cm = ConfusionMatrix(data.num_classes, ignore_index=255)
    cm.update(torch.zeros_like(data.val.targets).long(), data.val.targets.long())
    return cm.mean_iou()


def run(*, seeds: list[int], epochs: int, size: int, n: int, val: int, width: int, device: str, seg_width: int = 16,
        only: list[str] | None = None, loop: str = "archlab", log=print) -> dict[str, list[dict[str, float]]]:
    """Every net of :func:`nets` (or those named in ``only``) over ``seeds``; per-seed results by net."""
    results: dict[str, list[dict[str, float]]] = {}
    for seed in seeds:
        t = time.perf_counter()
        data = load_scenes(None, size=(size, size), seed=seed, n=n, val=val)
        log(f"seed {seed}: data {n}+{val} scenes {size}x{size} in {time.perf_counter() - t:.2f} s; "
            f"all-background mIoU {untrained_floor(data):.3f}")
        for name, graph in nets(data.num_classes, data.input_shape, width, seg_width).items():
            if only and name not in only:
                continue
            r = train_eval(graph, data, epochs=epochs, seed=seed, device=device, loop=loop)
            r.update(params=graph.num_params(), rf=rf_size(graph))
            results.setdefault(name, []).append(r)
            log(f"  {name:14s} params {r['params']:>8,d} rf {r['rf']:>4d}  mIoU {r['miou']:.3f}  "
                f"boundary acc {r['boundary_acc']:.3f}  pixel acc {r['pixel_acc']:.3f}  ({r['train_s']:.1f} s)")
    return results


#: the slow test's reduced run (tests/test_data_embedded.py): CPU-sized, the trainer's defaults
QUICK = {"seeds": [0, 1], "n": 1024, "val": 128, "epochs": 8, "width": 16, "seg_width": 8, "loop": "archlab"}


def _ms(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} +- {sd:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--val", type=int, default=256)
    p.add_argument("--width", type=int, default=32, help="channels of the (a) stacks")
    p.add_argument("--seg-width", type=int, default=16, help="base_width of the (b) encoder-decoders")
    p.add_argument("--loop", choices=("archlab", "plain"), default="archlab",
                   help="archlab.train.train (default) or the plain reference loop")
    p.add_argument("--only", default="", help="comma-separated net names")
    p.add_argument("--quick", action="store_true", help=f"the slow test's reduced run: {QUICK}")
    a = p.parse_args(argv)
    if a.quick:
        a.seeds, a.n, a.val, a.epochs, a.width, a.seg_width, a.loop = (
            ",".join(map(str, QUICK["seeds"])), QUICK["n"], QUICK["val"], QUICK["epochs"], QUICK["width"],
            QUICK["seg_width"], QUICK["loop"])
    seeds = [int(s) for s in a.seeds.split(",")]
    print(f"embedded scenes: {a.n}+{a.val} images {a.size}x{a.size}, {a.epochs} epochs, device {a.device}, "
          f"torch threads {torch.get_num_threads()}, loop {a.loop}, seeds {seeds}")
    t = time.perf_counter()
    res = run(seeds=seeds, epochs=a.epochs, size=a.size, n=a.n, val=a.val, width=a.width, seg_width=a.seg_width,
              device=a.device,
              only=[s for s in a.only.split(",") if s] or None, loop=a.loop)
    print(f"\nsummary over seeds {seeds} (mean +- std), wall {time.perf_counter() - t:.0f} s")
    for name, rs in res.items():
        print(f"  {name:14s} params {rs[0]['params']:>8,d} rf {rs[0]['rf']:>4d}  mIoU {_ms([r['miou'] for r in rs])}  "
              f"boundary acc {_ms([r['boundary_acc'] for r in rs])}  train {_ms([r['train_s'] for r in rs])} s")
    for lo, hi in (("a.local", "a.context"), ("b.skip_none", "b.skip_concat")):
        if lo in res and hi in res:
            d = [h["miou"] - l["miou"] for l, h in zip(res[lo], res[hi])]
            bd = [h["boundary_acc"] - l["boundary_acc"] for l, h in zip(res[lo], res[hi])]
            print(f"  {hi} - {lo}: mIoU {_ms(d)} (per seed {', '.join(f'{v:+.3f}' for v in d)}); "
                  f"boundary acc {_ms(bd)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
