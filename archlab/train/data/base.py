"""What every data source hands the trainer: uint8 tensors, resident, with their task.

A data source (a real layout read from disk, or an embedded generated task) is
loaded once into a :class:`TaskData`: every image and target of both splits as
one tensor each, already at the size the model takes. The trainer moves them to
the device as they are (uint8) and augments there, so no DataLoader runs in the
hot loop (Keller Jordan's airbench does the same).

Contract of a :class:`Split`:

* ``images``: ``torch.uint8``, shape ``(N, C, H, W)``, contiguous, on the CPU.
* ``targets``: segmentation: ``torch.uint8`` ``(N, H, W)`` holding class ids in
  ``[0, num_classes)`` or ``ignore_index`` (255); classification: ``torch.int64``
  ``(N,)`` in ``[0, num_classes)``.
* Both splits have the same C, H and W.

Loaders raise :class:`~archlab.errors.DataError` (an ``ArchlabError``) for bad
input -- a missing path (naming it and the expected layout), a mask value out
of range (naming the file and the value) -- before any training starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from archlab.errors import ArchlabError

Task = Literal["seg", "cls"]
IGNORE_INDEX = 255  # the ignore label of VOC, Cityscapes' train ids, torchvision's references


class DataError(ArchlabError):
    """A data set cannot be read or does not fit its layout (names the path and what was expected)."""


@dataclass(frozen=True)
class Split:
    """One split, resident: see the module docstring for the contract."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class TaskData:
    """A loaded data set: both splits and what travels with them."""

    spec: str                                # the spec string it was loaded from (for records and refusals)
    task: Task                               # "seg": per-pixel classes; "cls": one class per image
    num_classes: int                         # the model's output channels must equal this
    train: Split                             # augmented by the trainer
    val: Split                               # evaluated as is, every epoch
    ignore_index: int | None = IGNORE_INDEX  # target value that counts in neither the loss nor the metrics
    class_names: tuple[str, ...] | None = None  # for reports; None when the layout has none
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # per-channel normalisation of images / 255 (ImageNet's)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    #: zoom range of the train-time scale-crop unless the config names one: (0.5, 2.0) as torchvision's
    #: references for photographs; (1, 1) for generated data that already vary in scale
    aug_scale: tuple[float, float] = (0.5, 2.0)
    info: dict = field(default_factory=dict)  # layout-specific facts (root, sizes before resizing, ...)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        return tuple(int(s) for s in self.train.images.shape[1:])  # type: ignore[return-value]
