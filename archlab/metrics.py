"""Semantic-segmentation metrics (confusion matrix, IoU, accuracy) and losses.

Conventions shared by every function here:

* ``target`` holds integer class indices, shape ``(N, *spatial)`` (usually
  ``(N, H, W)``); a pixel whose target equals ``ignore_index`` counts nowhere
  (``ignore_index=None`` disables this).
* ``logits`` have shape ``(N, C, *spatial)``; the class axis is 1.
* Bad inputs raise :class:`~archlab.errors.ArchlabError` (shape problems as
  :class:`~archlab.errors.ShapeError`) naming the shapes or values, never a bare
  torch error.

IoU of class c is ``TP / (TP + FP + FN)``. A class absent from both the
prediction and the target (``TP + FP + FN == 0``) has IoU NaN ("undefined")
and is left out of every mean; a class that is only predicted has IoU 0 and
counts. Scalar metrics are NaN when nothing they average over exists (no
pixels, or no class seen), meaning "undefined, not measured".
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from archlab.errors import ArchlabError, ShapeError, fmt_shape

__all__ = ["confusion_matrix", "ConfusionMatrix", "cross_entropy", "soft_iou_loss"]


def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ArchlabError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def _check_target(target, num_classes: int, ignore_index: int | None, *, what: str = "target") -> torch.Tensor:
    """Return ``target`` as int64 after checking dtype and value range."""
    if not isinstance(target, torch.Tensor):
        raise ArchlabError(f"{what} must be a torch.Tensor, got {type(target).__name__}")
    if target.dtype == torch.bool:
        target = target.long()
    if target.dtype.is_floating_point or target.dtype.is_complex:
        raise ArchlabError(f"{what} must hold integer class indices, got dtype {target.dtype}")
    target = target.long()
    valid = target if ignore_index is None else target[target != ignore_index]
    if valid.numel():
        lo, hi = int(valid.min()), int(valid.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            extra = "" if ignore_index is None else f" or ignore_index={ignore_index}"
            raise ArchlabError(
                f"{what} holds class index {bad}, outside [0, {num_classes - 1}]{extra} "
                f"({what} shape {fmt_shape(target.shape)}, values in [{lo}, {hi}])")
    return target


def _check_logits(logits, target: torch.Tensor, what: str = "logits") -> None:
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point:
        got = logits.dtype if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ArchlabError(f"{what} must be a floating-point tensor (N, C, H, W), got {got}")
    if logits.dim() != target.dim() + 1 or logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ShapeError(
            f"{what} shape {fmt_shape(logits.shape)} does not fit target shape {fmt_shape(target.shape)}; "
            "expected logits (N, C, *S) with target (N, *S)")


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, *,
                     ignore_index: int | None = 255) -> torch.Tensor:
    """Count (target class, predicted class) pairs over all non-ignored pixels.

    Args:
        pred: Either class indices with the same shape as ``target`` (integer
            dtype), or logits/scores ``(N, num_classes, *spatial)`` (floating
            dtype) reduced by argmax over dim 1.
        target: Integer class indices ``(N, *spatial)``, values in
            ``[0, num_classes)`` or ``ignore_index``.
        num_classes: Number of classes ``K``.
        ignore_index: Target value whose pixels are excluded; ``None`` keeps all.

    Returns:
        int64 tensor ``(K, K)`` on ``target``'s device; entry ``[t, p]`` counts
        pixels of target class ``t`` predicted as ``p`` (rows = target).

    Raises:
        ShapeError: ``pred`` and ``target`` shapes do not fit, or the logits
            have a class axis other than ``num_classes``.
        ArchlabError: non-integer target, or a class index out of range.
    """
    num_classes = _check_num_classes(num_classes)
    target = _check_target(target, num_classes, ignore_index)
    if not isinstance(pred, torch.Tensor):
        raise ArchlabError(f"pred must be a torch.Tensor, got {type(pred).__name__}")
    if pred.dim() == target.dim() + 1:
        _check_logits(pred, target, "pred")
        if pred.shape[1] != num_classes:
            fix = "; for one-channel binary logits pass (pred > 0).long()" if pred.shape[1] == 1 else ""
            raise ShapeError(f"pred logits shape {fmt_shape(pred.shape)} has {pred.shape[1]} classes on dim 1, "
                             f"expected num_classes={num_classes}{fix}")
        pred = pred.detach().argmax(dim=1)
    elif pred.shape != target.shape:
        raise ShapeError(f"pred shape {fmt_shape(pred.shape)} does not match target shape {fmt_shape(target.shape)}; "
                         "pass class indices of the target's shape or logits (N, C, *S)")
    else:
        pred = _check_target(pred, num_classes, None, what="pred")
    pred = pred.to(target.device)
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    flat = target[keep] * num_classes + pred[keep]
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches and derives metrics from it.

    ``update`` adds :func:`confusion_matrix` of a batch, so accumulating
    batches equals one call on their concatenation. Per-class results are
    float64 tensors ``(K,)``; scalar results are Python floats. See the module
    docstring for the NaN conventions.

    Args:
        num_classes: Number of classes ``K``.
        ignore_index: Target value excluded from counting (``None``: none).
    """

    def __init__(self, num_classes: int, *, ignore_index: int | None = 255) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    @classmethod
    def from_matrix(cls, matrix, *, ignore_index: int | None = 255) -> ConfusionMatrix:
        """Wrap an existing ``(K, K)`` count matrix (rows = target, cols = prediction)."""
        m = torch.as_tensor(matrix)
        if m.dim() != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 1:
            raise ShapeError(f"a confusion matrix must be square (K, K), got shape {fmt_shape(m.shape)}")
        if m.dtype.is_floating_point or m.dtype.is_complex or bool((m < 0).any()):
            raise ArchlabError("a confusion matrix must hold non-negative integer counts")
        cm = cls(m.shape[0], ignore_index=ignore_index)
        cm.matrix = m.to(torch.int64).cpu().clone()
        return cm

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> ConfusionMatrix:
        """Add one batch (same arguments as :func:`confusion_matrix`); returns ``self``."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, ignore_index=self.ignore_index).cpu()
        return self

    def reset(self) -> None:
        """Zero the counts."""
        self.matrix.zero_()

    def _parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.matrix.double()
        tp = m.diagonal()
        return tp, m.sum(dim=0) - tp, m.sum(dim=1) - tp  # TP, FP, FN

    @property
    def total(self) -> int:
        """Number of pixels counted so far."""
        return int(self.matrix.sum())

    def pixel_accuracy(self) -> float:
        """Correct pixels / counted pixels; NaN when no pixel was counted."""
        return float(self.matrix.trace()) / self.total if self.total else math.nan

    def per_class_iou(self) -> torch.Tensor:
        """``TP / (TP + FP + FN)`` per class; NaN for classes absent from both target and prediction."""
        tp, fp, fn = self._parts()
        union = tp + fp + fn
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))

    def mean_iou(self) -> float:
        """Mean IoU over classes present in the target or the prediction.

        Returns NaN when no class is present at all (empty matrix): the mean is
        undefined rather than 0 or 1.
        """
        iou = self.per_class_iou()
        return float(iou.nanmean()) if bool((~iou.isnan()).any()) else math.nan

    def per_class_accuracy(self) -> torch.Tensor:
        """``TP / (TP + FN)`` (recall) per class; NaN for classes absent from the target."""
        tp, _, fn = self._parts()
        support = tp + fn
        return torch.where(support > 0, tp / support.clamp(min=1), torch.full_like(tp, math.nan))

    def mean_accuracy(self) -> float:
        """Mean of :meth:`per_class_accuracy` over classes present in the target; NaN if none."""
        acc = self.per_class_accuracy()
        return float(acc.nanmean()) if bool((~acc.isnan()).any()) else math.nan

    def frequency_weighted_iou(self) -> float:
        """``sum_c (support_c / total) * IoU_c`` over classes present in the target; NaN if empty."""
        if not self.total:
            return math.nan
        tp, _, fn = self._parts()
        freq = (tp + fn) / self.total
        iou = self.per_class_iou()
        return float((freq[freq > 0] * iou[freq > 0]).sum())

    def compute(self) -> dict[str, float]:
        """All scalar metrics in one dict (keys are the method names)."""
        return {name: getattr(self, name)() for name in
                ("pixel_accuracy", "mean_iou", "mean_accuracy", "frequency_weighted_iou")}

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={self.total}, mean_iou={self.mean_iou():.4f})"


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int | None = 255,
                  weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Pixel-wise cross-entropy, a validated wrapper over ``F.cross_entropy``.

    Args:
        logits: Unnormalized scores ``(N, C, *spatial)``.
        target: Class indices ``(N, *spatial)`` in ``[0, C)`` or ``ignore_index``.
        ignore_index: Target value that contributes neither loss nor count.
        weight: Optional per-class weights ``(C,)``.
        reduction: ``"mean"`` (weighted mean over non-ignored pixels, as in
            PyTorch; NaN when every pixel is ignored), ``"sum"`` or ``"none"``.

    Returns:
        The loss; differentiable w.r.t. ``logits``.
    """
    if not isinstance(target, torch.Tensor):
        raise ArchlabError(f"target must be a torch.Tensor, got {type(target).__name__}")
    _check_logits(logits, target)
    target = _check_target(target, logits.shape[1], ignore_index)
    if weight is not None and (not isinstance(weight, torch.Tensor) or weight.shape != (logits.shape[1],)):
        got = fmt_shape(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ShapeError(f"weight must have shape ({logits.shape[1]},) (one per class), got {got}")
    if reduction not in ("mean", "sum", "none"):
        raise ArchlabError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return F.cross_entropy(logits, target, weight=weight, reduction=reduction,
                           ignore_index=-100 if ignore_index is None else ignore_index)


def soft_iou_loss(scores: torch.Tensor, target: torch.Tensor, *, ignore_index: int | None = 255,
                  eps: float = 1e-6, from_logits: bool = True, reduction: str = "mean") -> torch.Tensor:
    """Soft IoU (Jaccard) loss ``L = 1 - I/U`` (Rahman & Wang; lecture notes).

    With probabilities ``X`` and one-hot target ``Y`` of a class,
    ``I = sum X*Y`` and ``U = sum (X + Y - X*Y)``, the sums running over every
    non-ignored pixel of the whole batch (one IoU per class for the batch).
    Per class ``L_c = 1 - (I_c + eps) / (U_c + eps)``; ``eps`` makes a class
    with ``U_c == 0`` cost 0 instead of 0/0. For hard one-hot ``X`` this is
    exactly ``1 - IoU_c`` up to ``eps``.

    Args:
        scores: ``(N, C, *spatial)``. Multi-class (``C > 1``): logits turned
            into probabilities by softmax over dim 1. Binary (``C == 1``):
            foreground logits turned into probabilities by sigmoid; only the
            foreground class (target 1) is scored. With
            ``from_logits=False`` the scores already are those probabilities.
        target: Class indices ``(N, *spatial)`` (binary: 0/1, bool allowed);
            a binary ``(N, 1, *spatial)`` target is accepted too.
        ignore_index: Target value whose pixels are masked out of I and U.
        eps: Smoothing added to numerator and denominator.
        from_logits: Whether ``scores`` are logits (default) or probabilities.
        reduction: ``"mean"`` over classes (scalar) or ``"none"`` (``(C,)``).

    Returns:
        The loss, differentiable w.r.t. ``scores``; 0 for a perfect hard prediction.
    """
    if not isinstance(target, torch.Tensor):
        raise ArchlabError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if isinstance(scores, torch.Tensor) and scores.dim() == target.dim() and scores.dim() > 1 and target.shape[1] == 1:
        target = target[:, 0]
    _check_logits(scores, target, "scores")
    c = scores.shape[1]
    binary = c == 1
    target = _check_target(target, 2 if binary else c, ignore_index)
    if reduction not in ("mean", "none"):
        raise ArchlabError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if from_logits:
        probs = torch.sigmoid(scores) if binary else torch.softmax(scores, dim=1)
    else:
        if scores.numel() and (float(scores.min()) < 0 or float(scores.max()) > 1):
            raise ArchlabError("from_logits=False needs probabilities in [0, 1], got values in "
                               f"[{float(scores.min()):.4g}, {float(scores.max()):.4g}]")
        probs = scores
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    safe = torch.where(keep, target, torch.zeros_like(target))
    if binary:
        onehot = safe.unsqueeze(1).to(probs.dtype)
    else:
        onehot = F.one_hot(safe, c).movedim(-1, 1).to(probs.dtype)
    mask = keep.unsqueeze(1).to(probs.dtype)
    x, y = probs * mask, onehot * mask
    dims = [0] + list(range(2, probs.dim()))
    inter = (x * y).sum(dim=dims)
    union = (x + y - x * y).sum(dim=dims)
    loss = 1 - (inter + eps) / (union + eps)
    return loss.mean() if reduction == "mean" else loss
