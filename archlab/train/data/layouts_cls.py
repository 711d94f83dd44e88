"""Classification data sets on disk: CIFAR-10's python batches and torchvision's ImageFolder layout.

==============  ================================================================  =========================
spec            folder under ROOT                                                 classes
==============  ================================================================  =========================
``cifar10``     ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``  10, names from batches.meta
                (ROOT may be that folder itself)
``imagefolder`` ``CLASS/*.jpg|png...``, or ``train/CLASS/`` + ``val/CLASS/``          one per folder, sorted
==============  ================================================================  =========================
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from archlab.train.data import _io
from archlab.train.data.base import DataError, Split, TaskData
from archlab.train.data.spec import register_layout

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
CIFAR_LAYOUT = f"{CIFAR_DIR}/{{data_batch_1..5,test_batch,batches.meta}} (the python version, as published)"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # per-channel statistics of CIFAR-10's training images
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGEFOLDER_LAYOUT = "ROOT/CLASS/*.jpg|png..., or ROOT/train/CLASS/ and ROOT/val/CLASS/"

# What a CIFAR batch may contain: dicts, lists, strings and numpy arrays; nothing that runs code.
_PICKLE_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                   ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a CIFAR batch holds only arrays)")
        return super().find_class(module, name)


def read_batch(path: Path, where: str) -> dict:
    """One published batch: a dict with ``data`` (N x 3072 uint8, CHW rows) and ``labels``."""
    _io.require(path, where, CIFAR_LAYOUT)
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="latin1").load()  # python-2 pickles, as torchvision reads them
    except Exception as e:  # a truncated or foreign file: any unpickling failure
        raise DataError(f"{where}: cannot read {path} as a CIFAR-10 python batch: {e}") from None
    if not isinstance(batch, dict):
        raise DataError(f"{where}: {path} is not a CIFAR-10 python batch (holds {type(batch).__name__})")
    return batch


def cifar_split(paths: list[Path], where: str) -> Split:
    images, labels = [], []
    for path in paths:
        batch = read_batch(path, where)
        data, lab = batch.get("data"), batch.get("labels")
        if not isinstance(data, np.ndarray) or lab is None or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 \
                or len(lab) != data.shape[0]:
            raise DataError(f"{where}: {path} lacks CIFAR-10's 'data' (N x 3072) and 'labels' (N) entries")
        images.append(data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(lab, dtype=np.int64))
    targets = torch.from_numpy(np.concatenate(labels))
    bad = targets[(targets < 0) | (targets >= 10)]
    if bad.numel():
        raise DataError(f"{where}: {paths} hold label {int(bad[0])}, outside CIFAR-10's 0..9")
    return Split(torch.from_numpy(np.ascontiguousarray(np.concatenate(images))), targets)


def resize_uint8(images: torch.Tensor, size: _io.Size, chunk: int = 2048) -> torch.Tensor:
    """Bilinear (antialiased) resize of uint8 ``(N, C, H, W)``, in chunks, back to uint8."""
    out = torch.empty((images.shape[0], images.shape[1], *size), dtype=torch.uint8)
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].float()
        y = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        out[i:i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _cap(split: Split, n: int | None) -> Split:
    idx = _io.subset(list(range(len(split))), n)
    if len(idx) == len(split):
        return split
    idx_t = torch.tensor(idx)
    return Split(split.images[idx_t].contiguous(), split.targets[idx_t].contiguous())


@register_layout("cifar10", needs_root=True, task="cls",
                 doc="CIFAR-10 python batches (cifar-10-batches-py) as published; 10 classes, 32x32")
def load_cifar10(root: str, *, size=None, seed: int = 0, max_images: int | None = None) -> TaskData:
    """CIFAR-10 (50000 train / 10000 test, the test batch is the validation split), what ``CIFAR10`` reads.

    ROOT is the folder holding ``cifar-10-batches-py`` (torchvision's ``root``)
    or that folder itself. Images stay 32x32 unless ``size`` asks otherwise.
    """
    where = f"cifar10:{root}"
    _io.check_max_images(max_images, where)
    size = _io.check_size(size or (32, 32), where)
    path = Path(root).expanduser()
    _io.require(path, where, CIFAR_LAYOUT)
    base = path / CIFAR_DIR if (path / CIFAR_DIR).is_dir() else path
    if not (base / CIFAR_TRAIN[0]).exists() and not (base / CIFAR_TEST).exists():
        raise DataError(f"{where}: missing {path / CIFAR_DIR}; expected {CIFAR_LAYOUT}")
    for name in (*CIFAR_TRAIN, CIFAR_TEST):  # name the first missing file before reading anything
        _io.require(base / name, where, CIFAR_LAYOUT)
    train = _cap(cifar_split([base / n for n in CIFAR_TRAIN], where), max_images)
    val = _cap(cifar_split([base / CIFAR_TEST], where), max_images)
    if size != (32, 32):
        train, val = (Split(resize_uint8(s.images, size), s.targets) for s in (train, val))
    names = None
    if (base / "batches.meta").is_file():
        meta = read_batch(base / "batches.meta", where).get("label_names")
        names = tuple(str(n) for n in meta) if meta is not None and len(meta) == 10 else None
    return TaskData(spec=where, task="cls", num_classes=10, train=train, val=val, ignore_index=None,
                    class_names=names, mean=CIFAR_MEAN, std=CIFAR_STD,
                    info={"layout": "cifar10", "root": str(path), "size": size})


# -- ImageFolder ---------------------------------------------------------------------------------

def class_folders(root: Path, where: str) -> dict[str, list[Path]]:
    """``{class: sorted image files}`` for every sub-folder of ``root``; an empty class folder is named."""
    _io.require(root, where, IMAGEFOLDER_LAYOUT)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{where}: {root} holds no class folders; expected {IMAGEFOLDER_LAYOUT}")
    out = {}
    for c in classes:
        files = _io.list_images(root / c)
        if not files:
            raise DataError(f"{where}: class folder {root / c} holds no images "
                            f"(extensions {', '.join(_io.IMAGE_EXTENSIONS)})")
        out[c] = files
    return out


@register_layout("imagefolder", needs_root=True, task="cls",
                 doc="torchvision's ImageFolder layout (ROOT/CLASS/*.jpg, or ROOT/train and ROOT/val)")
def load_imagefolder(root: str, *, size=None, seed: int = 0, max_images: int | None = None,
                     fit: str = "stretch", val_fraction: float = 0.2) -> TaskData:
    """One folder per class, classes in sorted order (torchvision's ``ImageFolder`` convention).

    Args:
        val_fraction: without ``train/`` and ``val/``, this share of each class
            (chosen by ``seed``) is held out for validation.
    """
    where = f"imagefolder:{root}"
    _io.check_max_images(max_images, where)
    _io.check_choice(fit, _io.FITS, where, "fit")
    size = _io.check_size(size or (64, 64), where)
    fraction = _io.check_fraction(val_fraction, where)
    path = Path(root).expanduser()
    _io.require(path, where, IMAGEFOLDER_LAYOUT)
    if (path / "train").is_dir() and (path / "val").is_dir():
        train_c, val_c = class_folders(path / "train", where), class_folders(path / "val", where)
        if sorted(train_c) != sorted(val_c):
            odd = sorted(set(train_c) ^ set(val_c))
            raise DataError(f"{where}: train/ and val/ hold different classes (only in one: {', '.join(odd)}); "
                            "both need the same class folders")
        classes = sorted(train_c)
        train = [(f, i) for i, c in enumerate(classes) for f in train_c[c]]
        val = [(f, i) for i, c in enumerate(classes) for f in val_c[c]]
        how = "train/ and val/"
    else:
        folders = class_folders(path, where)
        classes = sorted(folders)
        train, val = [], []
        for i, c in enumerate(classes):  # stratified: every class keeps its share in both splits
            t, v = _io.held_out(folders[c], fraction, seed + i)
            train += [(f, i) for f in t]
            val += [(f, i) for f in v]
        how = f"held out {len(val)} of {len(train) + len(val)} by seed {seed}"
    splits = {}
    for split, items in (("train", train), ("val", val)):
        if not items:
            raise DataError(f"{where}: the {split} split is empty; expected {IMAGEFOLDER_LAYOUT}")
        splits[split] = _io.load_cls_split(_io.subset(items, max_images), size=size, fit=fit,
                                           desc=f"imagefolder {split}")
    return TaskData(spec=where, task="cls", num_classes=len(classes), train=splits["train"], val=splits["val"],
                    ignore_index=None, class_names=tuple(classes),
                    info={"layout": "imagefolder", "root": str(path), "size": size, "fit": fit, "split": how,
                          "files": {"train": len(train), "val": len(val)}})
