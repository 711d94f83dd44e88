"""Reading layouts on disk: decode, check and resize image/mask files into resident uint8 splits.

Shared by every layout in :mod:`archlab.train.data.layouts_seg` and
:mod:`archlab.train.data.layouts_cls`. The rules they all follow:

* Images are decoded with PIL, converted to RGB and resized with a bilinear
  filter (PIL's resize is antialiased when it shrinks). Masks are resized with
  NEAREST, so every resized label is one of the labels of the file.
* A mask is read as class indices: a palette PNG (mode ``P``) gives its palette
  *indices*, never its colours; ``L``/``I;16``/``1`` give their values. An RGB
  mask is refused (it holds colours, not class ids).
* Mask values are mapped through a 256-entry lookup table and checked against
  the valid set *before* resizing, on the file's own pixels, so a bad value is
  reported with the file that holds it.
* ``fit="stretch"`` resizes the whole image to ``(H, W)``; ``fit="crop"`` takes
  the largest centred region of the target's aspect ratio first. Image and
  mask always take the same region.
* Files are decoded by a small thread pool (PIL releases the GIL while
  decoding); a tqdm bar on stderr shows progress for more than a few hundred.

Every failure is a :class:`~archlab.train.data.base.DataError` naming the file.
"""
from __future__ import annotations

import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from archlab.train.data.base import IGNORE_INDEX, DataError, Split

Size = tuple[int, int]  # (H, W)
FITS = ("stretch", "crop")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
PROGRESS_MIN = 300  # show a progress bar from this many files on
WORKERS = min(8, os.cpu_count() or 1)


# -- options -------------------------------------------------------------------------------------

def check_size(size, where: str) -> Size:
    """``size`` as ``(H, W)`` of positive ints, or a :class:`DataError`."""
    try:
        h, w = (int(s) for s in size)
        ok = h > 0 and w > 0 and (h, w) == tuple(size)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"{where}: size must be (H, W) with positive ints, got {size!r}")
    return h, w


def check_max_images(value, where: str) -> int | None:
    """``max_images`` option: ``None`` or a positive int."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{where}: max_images must be a positive integer, got {value!r}")
    return value


def check_fraction(value, where: str, name: str = "val_fraction") -> float:
    """A fraction strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise DataError(f"{where}: {name} must be a number between 0 and 1 (exclusive), got {value!r}")
    return float(value)


def check_choice(value, choices: Sequence[str], where: str, name: str) -> str:
    if value not in choices:
        raise DataError(f"{where}: {name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def subset(items: list, n: int | None) -> list:
    """At most ``n`` of ``items``, evenly spaced over the (sorted) list: the same files for every seed."""
    if n is None or n >= len(items):
        return items
    return [items[(i * len(items)) // n] for i in range(n)]


def held_out(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """Split ``items`` into (train, val) by a seeded permutation; val gets ``round(fraction * n)``, at least 1."""
    n = len(items)
    n_val = min(max(1, round(fraction * n)), n - 1) if n > 1 else 0
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val_idx, train_idx = sorted(perm[:n_val]), sorted(perm[n_val:])
    return [items[i] for i in train_idx], [items[i] for i in val_idx]


# -- paths ---------------------------------------------------------------------------------------

def require(path: Path, where: str, expected: str) -> Path:
    """``path`` if it exists, else a :class:`DataError` naming it and the expected layout."""
    if not path.exists():
        raise DataError(f"{where}: missing {path}; expected {expected}")
    return path


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (torchvision's extensions), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def by_stem(files: list[Path], where: str) -> dict[str, Path]:
    """``{stem: path}``; two files with one stem (``a.jpg``, ``a.png``) are ambiguous."""
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise DataError(f"{where}: {out[p.stem]} and {p} share the stem {p.stem!r}; keep one file per stem")
        out[p.stem] = p
    return out


# -- decoding ------------------------------------------------------------------------------------

def _open(path: Path, *, draft: tuple[int, int] | None = None):
    """Open and decode ``path``; ``draft`` lets a JPEG decode at a reduced scale no smaller than it (w, h)."""
    from PIL import Image, UnidentifiedImageError
    try:
        img = Image.open(path)
        if draft is not None and img.format == "JPEG" and draft[0] < img.size[0] and draft[1] < img.size[1]:
            img.draft("RGB", draft)  # DCT scaling: decodes 2-8x faster when shrinking a lot
        img.load()
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    return img


def _header_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


def _box(w: int, h: int, size: Size, fit: str) -> tuple[float, float, float, float]:
    """Source region (left, top, right, bottom) that is resized to ``size``."""
    if fit == "stretch":
        return 0.0, 0.0, float(w), float(h)
    th, tw = size
    scale = min(w / tw, h / th)  # the largest centred region with the target's aspect ratio
    cw, ch = tw * scale, th * scale
    left, top = (w - cw) / 2, (h - ch) / 2
    return left, top, left + cw, top + ch


def read_image(path: Path, size: Size, fit: str) -> tuple[np.ndarray, tuple[int, int]]:
    """``path`` as RGB, resized: uint8 ``(3, H, W)``, and the file's own ``(width, height)``."""
    from PIL import Image
    wh = _header_size(path)
    left, top, right, bottom = _box(*wh, size, fit)
    # the smallest full-image size at which the region still covers the target
    need = (math.ceil(size[1] * wh[0] / (right - left)), math.ceil(size[0] * wh[1] / (bottom - top)))
    img = _open(path, draft=need).convert("RGB")
    sx, sy = img.size[0] / wh[0], img.size[1] / wh[1]  # < 1 when the JPEG was decoded at a reduced scale
    if img.size != (size[1], size[0]) or fit != "stretch":
        img = img.resize((size[1], size[0]), Image.BILINEAR, box=(left * sx, top * sy, right * sx, bottom * sy))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1), wh


def read_mask(path: Path, lut: np.ndarray, valid: np.ndarray | None, image_wh: tuple[int, int],
              size: Size, fit: str) -> np.ndarray:
    """``path`` as class ids: indices checked against ``valid``, mapped by ``lut``, resized NEAREST.

    Args:
        lut: 256 uint8 entries, raw value -> class id (or ``IGNORE_INDEX``).
        valid: 256 bools, raw values the layout allows; ``None`` allows all.
        image_wh: the paired image's ``(width, height)``; the mask must match it.
    """
    from PIL import Image
    img = _open(path)
    if img.mode not in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
        raise DataError(f"mask {path} is a {img.mode} image; a mask holds one class id per pixel "
                        "(a single-channel PNG, mode L or P), not colours")
    if img.size != image_wh:
        raise DataError(f"mask {path} is {img.size[0]}x{img.size[1]} (WxH) but its image is "
                        f"{image_wh[0]}x{image_wh[1]}; a mask must have its image's size")
    raw = np.asarray(img)  # mode P: palette indices, not colours
    if raw.dtype != np.uint8:
        if raw.size and int(raw.max()) > 255:
            raise DataError(f"mask {path} holds value {int(raw.max())}, outside the layout's labels (0..255)")
        raw = raw.astype(np.uint8)
    if valid is not None:
        seen = np.bincount(raw.ravel(), minlength=256).astype(bool)
        bad = np.flatnonzero(seen & ~valid)
        if bad.size:
            allowed = _ranges(np.flatnonzero(valid))
            raise DataError(f"mask {path} holds value {int(bad[0])}, outside the layout's labels ({allowed})")
    out = Image.fromarray(lut[raw])  # 2-D uint8: mode L
    if out.size != (size[1], size[0]) or fit != "stretch":
        out = out.resize((size[1], size[0]), Image.NEAREST, box=_box(*out.size, size, fit))
    return np.asarray(out, dtype=np.uint8)


def _ranges(values: np.ndarray) -> str:
    """``[0,1,2,3,255]`` -> ``'0..3, 255'``."""
    parts, start = [], None
    for i, v in enumerate(values.tolist()):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}..{v}")
            start = None
    return ", ".join(parts)


# -- whole splits --------------------------------------------------------------------------------

def _run(n: int, work: Callable[[int], None], desc: str) -> None:
    """Call ``work(i)`` for ``i < n`` on the thread pool, with a progress bar for long runs."""
    from tqdm import tqdm
    pool = ThreadPoolExecutor(max_workers=WORKERS)
    try:
        with tqdm(total=n, desc=desc, unit="img", file=sys.stderr, leave=False, disable=n < PROGRESS_MIN) as bar:
            for _ in pool.map(work, range(n)):  # re-raises the first DataError of any worker
                bar.update(1)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # report the first bad file now, not after decoding the rest
        raise
    pool.shutdown(wait=True)


def load_seg_split(pairs: Sequence[tuple[Path, Path]], *, lut: np.ndarray, valid: np.ndarray | None,
                   size: Size, fit: str, desc: str) -> Split:
    """Decode ``(image, mask)`` file pairs into a resident segmentation :class:`Split`."""
    h, w = size
    images = np.empty((len(pairs), 3, h, w), dtype=np.uint8)
    masks = np.empty((len(pairs), h, w), dtype=np.uint8)

    def work(i: int) -> None:
        image_path, mask_path = pairs[i]
        images[i], wh = read_image(image_path, size, fit)
        masks[i] = read_mask(mask_path, lut, valid, wh, size, fit)

    _run(len(pairs), work, desc)
    return Split(torch.from_numpy(images), torch.from_numpy(masks))


def load_cls_split(items: Sequence[tuple[Path, int]], *, size: Size, fit: str, desc: str) -> Split:
    """Decode ``(image, class)`` items into a resident classification :class:`Split`."""
    h, w = size
    images = np.empty((len(items), 3, h, w), dtype=np.uint8)

    def work(i: int) -> None:
        images[i] = read_image(items[i][0], size, fit)[0]

    _run(len(items), work, desc)
    targets = torch.tensor([c for _, c in items], dtype=torch.int64)
    return Split(torch.from_numpy(images), targets)


def identity_lut() -> np.ndarray:
    return np.arange(256, dtype=np.uint8)


def valid_values(num_classes: int, *, ignore: bool = True) -> np.ndarray:
    """Raw values ``0..num_classes-1`` (and ``IGNORE_INDEX`` when ``ignore``) are valid."""
    valid = np.zeros(256, dtype=bool)
    valid[:num_classes] = True
    if ignore:
        valid[IGNORE_INDEX] = True
    return valid
