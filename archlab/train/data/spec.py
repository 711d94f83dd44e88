"""Data spec strings: one string names a data set for every command (``--data SPEC``).

Grammar: ``NAME[:ITEM[,ITEM...]]``. After the colon, items are separated by
commas; an item ``key=value`` is an option, and the one item without ``=`` is
the root folder of a layout on disk. Examples::

    scenes                       the embedded segmentation task, defaults
    scenes:n=2000,classes=6      ... with options
    voc:/data/VOCdevkit          PASCAL VOC 2012 as published
    cifar10:/data/cifar-10-batches-py,max_images=5000

A layout is registered with :func:`register_layout`; :func:`load_data` parses
the spec, checks the options against the loader's signature and calls it.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from archlab.train.data.base import DataError, TaskData

Loader = Callable[..., TaskData]


@dataclass(frozen=True)
class Layout:
    name: str
    loader: Loader       # loader(root, *, size, seed, **options) -> TaskData; root is None for embedded tasks
    needs_root: bool     # a layout on disk needs ROOT; an embedded task must not have one
    task: str            # "seg" or "cls"
    doc: str             # one line for `--help` and errors


_LAYOUTS: dict[str, Layout] = {}


def register_layout(name: str, *, needs_root: bool, task: str, doc: str) -> Callable[[Loader], Loader]:
    """Register ``loader`` under ``name``; a name registered twice is an error."""
    def deco(fn: Loader) -> Loader:
        if name in _LAYOUTS:
            raise ValueError(f"data layout {name!r} registered twice")
        _LAYOUTS[name] = Layout(name, fn, needs_root, task, doc)
        return fn
    return deco


def layouts() -> dict[str, Layout]:
    """Every registered layout, by name."""
    _load_builtins()
    return dict(_LAYOUTS)


def _load_builtins() -> None:
    import archlab.train.data.embedded  # noqa: F401  (registers scenes, shapes)
    import archlab.train.data.layouts_cls  # noqa: F401  (registers cifar10, imagefolder)
    import archlab.train.data.layouts_seg  # noqa: F401  (registers voc, cityscapes, camvid, ade20k, folder)


def _convert(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """``"voc:/d,max_images=10"`` -> ``("voc", "/d", {"max_images": 10})``."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"empty data spec; write NAME or NAME:ROOT, one of {', '.join(sorted(layouts()))}")
    name, _, rest = spec.partition(":")
    root, options = None, {}
    for item in rest.split(",") if rest else []:
        key, eq, value = item.partition("=")
        if eq:
            if not key.strip():
                raise DataError(f"data spec {spec!r}: option {item!r} has no name; write key=value")
            options[key.strip()] = _convert(value.strip())
        elif root is None:
            root = item
        else:
            raise DataError(f"data spec {spec!r}: two roots ({root!r} and {item!r}); options are written key=value")
    return name.strip().lower(), root, options


def load_data(spec: str, *, size: tuple[int, int] | None = None, seed: int = 0) -> TaskData:
    """Load the data set ``spec`` names, images at ``size`` = ``(H, W)`` (the model's input).

    Args:
        spec: see the module docstring.
        size: resize (layouts on disk) or generate (embedded tasks) at this size;
            ``None`` keeps the layout's default size.
        seed: for generation and for held-out splits of layouts that have none.

    Raises:
        DataError: unknown name, missing or unexpected root, unknown option,
            or whatever the loader finds wrong with the data on disk.
    """
    name, root, options = parse_spec(spec)
    known = layouts()
    if name not in known:
        raise DataError(f"unknown data set {name!r} in spec {spec!r}; known: {', '.join(sorted(known))}")
    layout = known[name]
    if layout.needs_root and not root:
        raise DataError(f"data spec {spec!r}: {name} reads a folder; write {name}:ROOT ({layout.doc})")
    if not layout.needs_root and root:
        raise DataError(f"data spec {spec!r}: {name} is generated and takes no folder; options are key=value")
    params = inspect.signature(layout.loader).parameters
    allowed = sorted(p for p, v in params.items() if v.kind == v.KEYWORD_ONLY and p not in ("size", "seed"))
    for key in options:
        if key not in allowed:
            raise DataError(f"data spec {spec!r}: {name} has no option {key!r}; options: {', '.join(allowed) or 'none'}")
    data = layout.loader(root, size=size, seed=seed, **options)
    data.spec = spec
    return data
