"""Validation: metrics of a model on a resident split, accumulated on the device.

Segmentation counts a confusion matrix with one ``bincount`` per batch on the
device and hands it to :class:`archlab.metrics.ConfusionMatrix` once, so every
figure (mIoU, pixel accuracy, mean accuracy) follows archlab.metrics'
conventions (ignored pixels count nowhere; a class absent from target and
prediction is left out of the means). Classification gives top-1 (and top-5
when there are more than 5 classes).
"""
from __future__ import annotations

import contextlib

import torch

from archlab.metrics import ConfusionMatrix


def main_key(outputs) -> str:
    """The name of a multi-output graph's main prediction: ``out``, else the first."""
    return "out" if "out" in outputs else next(iter(outputs))


def main_output(out):
    """The main prediction of a model's output (a tensor, or the dict of a
    multi-output graph: see :func:`main_key`)."""
    return out[main_key(out)] if isinstance(out, dict) else out


@torch.no_grad()
def evaluate(model, split, *, task: str, num_classes: int, ignore_index: int | None, normalize,
             batch_size: int, device, autocast, channels_last: bool) -> dict[str, float]:
    """Metrics of ``model`` on ``split`` (a resident :class:`~archlab.train.data.Split`).

    Returns:
        Segmentation: ``miou``, ``pixel_acc``, ``mean_acc``; classification:
        ``top1`` (and ``top5`` when ``num_classes > 5``). Fractions in [0, 1].
    """
    was_training = model.training
    model.eval()
    k = num_classes
    counts = torch.zeros(k * k, dtype=torch.int64, device=device)
    correct1 = torch.zeros((), dtype=torch.int64, device=device)
    correct5 = torch.zeros((), dtype=torch.int64, device=device)
    images, targets = split.images, split.targets
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with autocast() if autocast else contextlib.nullcontext():
        for i in range(0, len(split), batch_size):
            x = normalize(images[i:i + batch_size].to(device, non_blocking=True)).contiguous(memory_format=fmt)
            y = targets[i:i + batch_size].to(device, non_blocking=True).long()
            logits = main_output(model(x)).float()
            if task == "seg":
                pred = logits.argmax(1)
                keep = y != ignore_index if ignore_index is not None else torch.ones_like(y, dtype=torch.bool)
                counts += torch.bincount(y[keep] * k + pred[keep], minlength=k * k)
            else:
                top = logits.topk(min(5, k), dim=1).indices
                correct1 += (top[:, 0] == y).sum()
                correct5 += (top == y[:, None]).any(1).sum()
    model.train(was_training)
    if task == "seg":
        cm = ConfusionMatrix.from_matrix(counts.view(k, k).cpu(), ignore_index=ignore_index)
        return {"miou": cm.mean_iou(), "pixel_acc": cm.pixel_accuracy(), "mean_acc": cm.mean_accuracy()}
    n = max(len(split), 1)
    metrics = {"top1": int(correct1) / n}
    if k > 5:
        metrics["top5"] = int(correct5) / n
    return metrics
