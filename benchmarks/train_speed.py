"""Training throughput: archlab's trainer against a plain eager PyTorch loop, same nets, same data.

    python benchmarks/train_speed.py                 # the CPU (fp32 for both)
    python benchmarks/train_speed.py --device cuda   # a GPU: + model-FLOP utilisation and memory

For each net -- resnet18 at 3x32x32 (8 classes, the embedded ``shapes`` task)
and three ``seg``-space candidates at 3x64x64 (the embedded ``scenes`` task) --
both loops train the same compiled graph (same init, same optimizer, same
batch) for the same number of steps after a warm-up, ``--repeats`` times each,
alternating, and the script prints the median images/s of each and their ratio.

The peer is what a user writes first: a ``torch.utils.data.DataLoader`` over a
Dataset of the same uint8 tensors, per-image torchvision ``transforms.v2``
augmentation (random resized crop + flip for segmentation, pad-crop + flip for
classification), fp32, the default memory format, pinned memory and 4 workers
on CUDA (0 workers on the CPU, where workers would compete for the same cores).
archlab's trainer keeps the data resident on the device and augments whole
batches there, with bf16 autocast and channels_last on CUDA (fp32 and the
default memory format on the CPU). Evaluation is excluded from both.

On CUDA it also prints model-FLOP utilisation (archlab's MACs x 2 x 3 per image,
forward + backward, times images/s, over the GPU's dense bf16 peak) and the
measured peak training memory (``torch.cuda.max_memory_allocated``) next to
archlab's predicted training memory for the same batch.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from archlab.analysis import analyze  # noqa: E402
from archlab.analysis.memory import training_memory  # noqa: E402
from archlab.torchio.compile import to_module  # noqa: E402
from archlab.train import TrainConfig, load_data, train  # noqa: E402
from archlab.train.data import Split  # noqa: E402
from archlab.train.init import initialise  # noqa: E402
from archlab.zoo import get_model  # noqa: E402
from search_spaces.seg import seg_graph  # noqa: E402

SEG_CANDIDATES = {  # three seg-space networks of growing cost
    "seg-small": dict(depth=3, output_stride=8, base_width=16, width_growth=1.5, block="plain", kernel_size=3,
                      skip="concat", upsample="bilinear", head="none"),
    "seg-medium": dict(depth=4, output_stride=16, base_width=24, width_growth=2.0, block="basic", kernel_size=3,
                       skip="add", upsample="transposed", head="aspp", aspp_rates="2,4,6"),
    "seg-large": dict(depth=5, output_stride=16, base_width=32, width_growth=2.0, block="bottleneck",
                      kernel_size=5, skip="concat", upsample="unpool", head="ppm"),
}
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peaks (SXM datasheets)


def nets():
    shapes = load_data("shapes:n=2048,val=64,classes=8", size=(32, 32))
    scenes = load_data("scenes:n=1024,val=64", size=(64, 64))
    yield "resnet18@32", get_model("resnet18", num_classes=shapes.num_classes, input_shape=(3, 32, 32)), shapes
    for name, cfg in SEG_CANDIDATES.items():
        yield name, seg_graph(cfg, num_classes=scenes.num_classes, input_shape=(3, 64, 64), name=name), scenes


class _Images(torch.utils.data.Dataset):
    """The peer's Dataset: one uint8 image (and mask) at a time, transformed per image."""

    def __init__(self, split, task: str, mean, std) -> None:
        from torchvision import tv_tensors
        from torchvision.transforms import v2 as T

        self.split, self.task, self.tv = split, task, tv_tensors
        h, w = split.images.shape[-2:]
        aug = ([T.RandomResizedCrop((h, w), scale=(0.25, 1.0), antialias=True)] if task == "seg"
               else [T.RandomCrop((h, w), padding=4)])
        self.t = T.Compose([*aug, T.RandomHorizontalFlip(), T.ToDtype({tv_tensors.Image: torch.float32,
                                                                       "others": None}, scale=True),
                            T.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i):
        img = self.tv.Image(self.split.images[i])
        if self.task == "seg":
            img, mask = self.t(img, self.tv.Mask(self.split.targets[i]))
            return img, mask.long()
        return self.t(img), self.split.targets[i]


def plain_loop(graph, data, *, batch: int, steps: int, warmup: int, device: torch.device) -> float:
    """images/s of the eager peer (see the module docstring)."""
    torch.manual_seed(0)
    model = initialise(to_module(graph), graph).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-4)
    cuda = device.type == "cuda"
    loader = torch.utils.data.DataLoader(_Images(data.train, data.task, data.mean, data.std), batch_size=batch,
                                         shuffle=True, drop_last=True, num_workers=4 if cuda else 0,
                                         pin_memory=cuda, persistent_workers=cuda)
    done, t0 = 0, None
    while done < warmup + steps:
        for x, y in loader:
            if done == warmup:
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out = model(x)
            out = out["out"] if isinstance(out, dict) else out
            loss = F.cross_entropy(out, y, ignore_index=255)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == warmup + steps:
                break
    if cuda:
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def archlab_loop(graph, data, *, batch: int, steps: int, warmup: int, device: torch.device, compile: bool):
    """images/s of archlab's trainer (epochs of ``steps`` steps; the last one timed) and its result."""
    n = steps * batch
    sub = dataclasses.replace(data, train=Split(data.train.images[:n], data.train.targets[:n]))
    epochs = 1 + max(1, -(-warmup // steps))
    # scale-crop 0.5-2x for segmentation whatever the data's default (flips only for scenes): a full
    # resampling per batch, as the peer's RandomResizedCrop does per image
    r = train(graph, sub, TrainConfig(epochs=epochs, batch_size=batch, device=str(device), compile=compile,
                                      scale=(0.5, 2.0)),
              progress=False)
    return r.history[-1].images_per_s, r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=None, help="default 32 on the CPU, 256 on CUDA")
    p.add_argument("--steps", type=int, default=None, help="timed steps per loop (default 40 CPU, 60 CUDA)")
    p.add_argument("--compile", action="store_true", help="archlab's loop with torch.compile")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs of each loop; the median is reported")
    p.add_argument("--only", default=None, help="comma-separated net names")
    p.add_argument("--json", default=None, help="also write the rows here")
    a = p.parse_args()
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    batch = a.batch or (256 if cuda else 32)
    steps = a.steps or 60 if cuda else a.steps or 40
    warmup = 10 if cuda else 3
    gpu = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    peak = next((v for k, v in BF16_PEAK.items() if k in gpu), None) if cuda else None
    print(f"# {gpu}; torch {torch.__version__}; batch {batch}, {steps} timed steps after {warmup} warm-up")
    rows = []
    for name, graph, data in nets():
        if a.only and name not in a.only.split(","):
            continue
        macs = analyze(graph).totals["macs"]
        peers, ourses = [], []
        for _ in range(a.repeats):  # alternate, so drifts of the machine hit both loops alike
            peers.append(plain_loop(graph, data, batch=batch, steps=steps, warmup=warmup, device=device))
            o, r = archlab_loop(graph, data, batch=batch, steps=steps, warmup=warmup, device=device, compile=a.compile)
            ourses.append(o)
        peer, ours = statistics.median(peers), statistics.median(ourses)
        row = {"net": name, "params": graph.num_params(), "macs": macs, "plain_img_s": peer, "archlab_img_s": ours,
               "ratio": ours / peer, "plain_runs": peers, "archlab_runs": ourses}
        if cuda:
            row["mfu"] = macs * 2 * 3 * ours / peak if peak else None
            row["peak_mem"] = r.peak_memory_bytes
            row["pred_mem_bf16"] = training_memory(graph, batch=batch, dtype="bfloat16", optimizer="adam").total
            row["pred_mem_fp32"] = training_memory(graph, batch=batch, dtype="float32", optimizer="adam").total
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    head = f"{'net':12} {'params':>10} {'MACs':>9} {'plain img/s':>12} {'archlab img/s':>14} {'ratio':>6}"
    if cuda:
        head += f" {'MFU':>6} {'peak MiB':>9} {'pred bf16':>9} {'pred fp32':>9}"
    print(head)
    for r in rows:
        line = (f"{r['net']:12} {r['params']:>10,} {r['macs'] / 1e6:>8.1f}M {r['plain_img_s']:>12,.0f} "
                f"{r['archlab_img_s']:>14,.0f} {r['ratio']:>5.2f}x")
        if cuda:
            mib = 2**20
            line += (f" {(r['mfu'] or 0) * 100:>5.1f}% {r['peak_mem'] / mib:>9.0f} {r['pred_mem_bf16'] / mib:>9.0f}"
                     f" {r['pred_mem_fp32'] / mib:>9.0f}")
        print(line)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
