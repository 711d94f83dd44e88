"""Segmentation metrics and losses: hand-computed matrices, the lecture's Jaccard example, NaN rules."""
import math

import pytest
import torch
import torch.nn.functional as F

from archlab.errors import ArchlabError, ShapeError
from archlab.metrics import ConfusionMatrix, confusion_matrix, cross_entropy, soft_iou_loss

# EE655 Lecture 10 (U-Net evaluation, "Intersection over Union Evaluation Metric
# (Jaccard Similarity)"): two 4x4 masks, their intersection and union, 3/11 = 0.27.
LECTURE_A = torch.tensor([[1, 1, 0, 1],
                          [1, 1, 1, 1],
                          [0, 1, 1, 1],
                          [0, 0, 0, 0]])
LECTURE_B = torch.tensor([[0, 0, 0, 0],
                          [0, 1, 1, 0],
                          [0, 1, 0, 0],
                          [0, 0, 1, 0]])
LECTURE_INTERSECTION = torch.tensor([[0, 0, 0, 0],
                                     [0, 1, 1, 0],
                                     [0, 1, 0, 0],
                                     [0, 0, 0, 0]])
LECTURE_UNION = torch.tensor([[1, 1, 0, 1],
                              [1, 1, 1, 1],
                              [0, 1, 1, 1],
                              [0, 0, 1, 0]])

# 3-class example, computed by hand:
# pairs (t, p): (0,0) (0,1) (1,1) (1,1) (2,2) (2,0)
TARGET3 = torch.tensor([[[0, 0, 1], [1, 2, 2]]])
PRED3 = torch.tensor([[[0, 1, 1], [1, 2, 0]]])
MATRIX3 = torch.tensor([[1, 1, 0],
                        [0, 2, 0],
                        [1, 0, 1]])


def brute_matrix(pred, target, k, ignore=255):
    m = torch.zeros(k, k, dtype=torch.int64)
    for p, t in zip(pred.flatten().tolist(), target.flatten().tolist()):
        if t != ignore:
            m[t, p] += 1
    return m


def test_hand_computed_three_class():
    m = confusion_matrix(PRED3, TARGET3, 3)
    assert m.dtype == torch.int64
    assert torch.equal(m, MATRIX3)
    cm = ConfusionMatrix(3).update(PRED3, TARGET3)
    # TP=[1,2,1], FP=[1,1,0], FN=[1,0,1]
    assert torch.allclose(cm.per_class_iou(), torch.tensor([1 / 3, 2 / 3, 1 / 2], dtype=torch.float64))
    assert cm.mean_iou() == pytest.approx(0.5)
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)
    assert torch.allclose(cm.per_class_accuracy(), torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64))
    assert cm.mean_accuracy() == pytest.approx(2 / 3)
    assert cm.frequency_weighted_iou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cm.compute()["mean_iou"] == pytest.approx(0.5)


def test_frequency_weighted_iou_unequal_supports():
    cm = ConfusionMatrix.from_matrix([[6, 2], [1, 1]])
    # IoU0 = 6/9, IoU1 = 1/4; freq = 8/10, 2/10
    assert cm.frequency_weighted_iou() == pytest.approx(0.8 * 6 / 9 + 0.2 * 0.25)
    assert cm.mean_iou() == pytest.approx((6 / 9 + 0.25) / 2)


def test_lecture_jaccard_example_3_over_11():
    assert torch.equal(LECTURE_A & LECTURE_B, LECTURE_INTERSECTION)
    assert torch.equal(LECTURE_A | LECTURE_B, LECTURE_UNION)
    assert int(LECTURE_INTERSECTION.sum()) == 3 and int(LECTURE_UNION.sum()) == 11
    cm = ConfusionMatrix(2).update(LECTURE_B[None], LECTURE_A[None])
    iou = cm.per_class_iou()
    assert iou[1].item() == pytest.approx(3 / 11)
    assert round(iou[1].item(), 2) == 0.27
    assert iou[0].item() == pytest.approx(5 / 13)  # background: 5 both-0 pixels, 13 in the union of zeros
    # Jaccard is symmetric: swapping prediction and target gives the same foreground IoU.
    assert ConfusionMatrix(2).update(LECTURE_A[None], LECTURE_B[None]).per_class_iou()[1].item() == pytest.approx(3 / 11)
    # Soft IoU loss on the hard binary masks (N,1,H,W) is 1 - 3/11.
    probs = LECTURE_B[None, None].float()
    loss = soft_iou_loss(probs, LECTURE_A[None], from_logits=False)
    assert loss.item() == pytest.approx(8 / 11, abs=1e-6)
    logits = (LECTURE_B[None, None].float() * 2 - 1) * 30  # sigmoid -> ~hard masks
    assert soft_iou_loss(logits, LECTURE_A[None]).item() == pytest.approx(8 / 11, abs=1e-5)
    # A (N,1,H,W) target is accepted for binary outputs too.
    assert soft_iou_loss(probs, LECTURE_A[None, None], from_logits=False).item() == pytest.approx(8 / 11, abs=1e-6)


def test_ignore_index_excludes_pixels():
    target = TARGET3.clone()
    target[0, 1, 2] = 255  # the (2 -> 0) pixel
    m = confusion_matrix(PRED3, target, 3)
    expected = MATRIX3.clone()
    expected[2, 0] = 0
    assert torch.equal(m, expected)
    assert int(m.sum()) == 5
    # custom ignore index, and None meaning "ignore nothing"
    target2 = torch.where(target == 255, torch.tensor(-1), target)
    assert torch.equal(confusion_matrix(PRED3, target2, 3, ignore_index=-1), expected)
    assert torch.equal(confusion_matrix(PRED3, TARGET3, 3, ignore_index=None), MATRIX3)
    all_ignored = ConfusionMatrix(3).update(PRED3, torch.full_like(TARGET3, 255))
    assert all_ignored.total == 0 and math.isnan(all_ignored.pixel_accuracy())


def test_absent_class_excluded_from_mean():
    cm = ConfusionMatrix(4).update(PRED3, TARGET3)  # class 3 in neither prediction nor target
    iou = cm.per_class_iou()
    assert math.isnan(iou[3].item())
    assert cm.mean_iou() == pytest.approx(0.5)  # not (0.5*3 + 0)/4 nor (0.5*3 + 1)/4
    assert math.isnan(cm.per_class_accuracy()[3].item())
    assert cm.mean_accuracy() == pytest.approx(2 / 3)
    assert cm.frequency_weighted_iou() == pytest.approx(0.5)


def test_class_only_in_prediction_counts_as_zero():
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    pred = torch.tensor([[[0, 1], [0, 0]]])
    cm = ConfusionMatrix(2).update(pred, target)
    iou = cm.per_class_iou()
    assert iou[0].item() == pytest.approx(3 / 4)
    assert iou[1].item() == 0.0
    assert cm.mean_iou() == pytest.approx(3 / 8)
    assert math.isnan(cm.per_class_accuracy()[1].item())  # recall undefined: no target pixels
    assert cm.mean_accuracy() == pytest.approx(3 / 4)


def test_empty_matrix_is_nan():
    cm = ConfusionMatrix(3)
    assert torch.isnan(cm.per_class_iou()).all()
    for value in cm.compute().values():
        assert math.isnan(value)


def test_accumulation_equals_one_shot_and_reset():
    g = torch.Generator().manual_seed(0)
    k = 5
    preds = [torch.randint(0, k, (2, 7, 9), generator=g) for _ in range(4)]
    targets = [torch.randint(0, k, (2, 7, 9), generator=g) for _ in range(4)]
    for t in targets:
        t[torch.rand(t.shape, generator=g) < 0.1] = 255
    cm = ConfusionMatrix(k)
    for p, t in zip(preds, targets):
        cm.update(p, t)
    one_shot = confusion_matrix(torch.cat(preds), torch.cat(targets), k)
    assert torch.equal(cm.matrix, one_shot)
    assert torch.equal(one_shot, brute_matrix(torch.cat(preds), torch.cat(targets), k))
    assert cm.mean_iou() == pytest.approx(ConfusionMatrix.from_matrix(one_shot).mean_iou())
    cm.reset()
    assert cm.total == 0


def test_logits_equal_indices():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 6, 5, generator=g)
    target = torch.randint(0, 4, (3, 6, 5), generator=g)
    assert torch.equal(confusion_matrix(logits, target, 4), confusion_matrix(logits.argmax(1), target, 4))
    assert torch.equal(confusion_matrix(logits.requires_grad_(), target, 4),
                       brute_matrix(logits.argmax(1), target, 4))


def test_bad_inputs_raise_archlab_errors():
    with pytest.raises(ShapeError, match=r"1x2x3.*1x3x2"):
        confusion_matrix(PRED3, TARGET3.transpose(1, 2), 3)
    with pytest.raises(ArchlabError, match=r"class index 7"):
        confusion_matrix(PRED3, torch.where(TARGET3 == 2, 7, TARGET3), 3)
    with pytest.raises(ArchlabError, match=r"class index -1"):
        confusion_matrix(PRED3, TARGET3 - 1, 3)
    with pytest.raises(ArchlabError, match=r"pred holds class index 3"):
        confusion_matrix(PRED3 + 1, TARGET3, 3)
    with pytest.raises(ShapeError, match=r"2 classes on dim 1, expected num_classes=3"):
        confusion_matrix(torch.randn(1, 2, 2, 3), TARGET3, 3)
    with pytest.raises(ArchlabError, match="integer class indices"):
        confusion_matrix(PRED3, TARGET3.float(), 3)
    with pytest.raises(ArchlabError, match="num_classes"):
        ConfusionMatrix(0)
    with pytest.raises(ShapeError, match="square"):
        ConfusionMatrix.from_matrix(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"2x3x4x4.*2x5x4"):
        cross_entropy(torch.randn(2, 3, 4, 4), torch.zeros(2, 5, 4, dtype=torch.long))
    with pytest.raises(ArchlabError, match="class index 3"):
        cross_entropy(torch.randn(1, 3, 2, 3), TARGET3 + 1)
    with pytest.raises(ShapeError, match="weight"):
        cross_entropy(torch.randn(1, 3, 2, 3), TARGET3, weight=torch.ones(4))
    with pytest.raises(ArchlabError, match="class index 2"):
        soft_iou_loss(torch.randn(1, 1, 2, 3), TARGET3)  # binary target must be 0/1
    with pytest.raises(ArchlabError, match=r"probabilities in \[0, 1\]"):
        soft_iou_loss(torch.randn(1, 3, 2, 3) * 5, TARGET3, from_logits=False)


def test_soft_iou_perfect_prediction_is_zero():
    onehot = F.one_hot(TARGET3, 3).permute(0, 3, 1, 2).float()
    assert soft_iou_loss(onehot, TARGET3, from_logits=False).item() == pytest.approx(0.0, abs=1e-7)
    assert soft_iou_loss(onehot * 40 - 20, TARGET3).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_iou_matches_one_minus_iou_for_hard_inputs():
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    pred = torch.randint(0, 4, (2, 8, 8), generator=g)
    onehot = F.one_hot(pred, 4).permute(0, 3, 1, 2).float()
    per_class = soft_iou_loss(onehot, target, from_logits=False, reduction="none")
    iou = ConfusionMatrix(4).update(pred, target).per_class_iou().float()
    assert torch.allclose(per_class, 1 - iou, atol=1e-6)
    assert soft_iou_loss(onehot, target, from_logits=False).item() == pytest.approx(1 - iou.mean().item(), abs=1e-6)


def test_soft_iou_gradient_flows_and_ignores_masked_pixels():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 5, 5, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 5), generator=g)
    target[0, 0, 0] = 255
    loss = soft_iou_loss(logits, target)
    assert loss.requires_grad and 0 < loss.item() < 1
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert logits.grad[0, :, 0, 0].abs().max() == 0  # ignored pixel gets no gradient
    changed = logits.detach().clone()
    changed[0, :, 0, 0] = torch.tensor([9.0, -9.0, 3.0])
    assert soft_iou_loss(changed, target).item() == pytest.approx(loss.item(), abs=1e-7)
    # binary sigmoid output
    bin_logits = torch.randn(2, 1, 5, 5, generator=g, requires_grad=True)
    soft_iou_loss(bin_logits, (target == 1)).backward()
    assert torch.isfinite(bin_logits.grad).all() and bin_logits.grad.abs().sum() > 0


def test_cross_entropy_ignore_index_and_weight():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 4, 4, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4), generator=g)
    target[:, 0, :] = 255
    loss = cross_entropy(logits, target)
    keep = target != 255
    flat_logits = logits.permute(0, 2, 3, 1)[keep]
    assert loss.item() == pytest.approx(F.cross_entropy(flat_logits, target[keep]).item(), abs=1e-6)
    loss.backward()
    assert logits.grad[:, :, 0, :].abs().max() == 0
    w = torch.tensor([1.0, 2.0, 0.5])
    assert cross_entropy(logits, target, weight=w).item() == pytest.approx(
        F.cross_entropy(flat_logits, target[keep], weight=w).item(), abs=1e-6)
    assert torch.isnan(cross_entropy(logits, torch.full_like(target, 255)))  # documented: all ignored -> NaN
