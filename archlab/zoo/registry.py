"""The model zoo registry: names, builders and reference metadata.

Each zoo entry is a builder function ``(**cfg) -> Graph`` registered with
:func:`register_model` together with the facts tests check it against: the paper,
the reference parameter count and where that number comes from, and the
torchvision builder that has the same architecture (if any).
"""
from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from archlab.errors import ArchlabError, ModelNotFoundError
from archlab.graph import Graph


@dataclass(frozen=True)
class ModelInfo:
    """A zoo entry.

    Fields:
        name: registry name (``resnet50``).
        family: ``resnet``, ``vgg``, ... (for ``archlab zoo``).
        builder: ``(**cfg) -> Graph``; every builder takes ``num_classes`` and
            ``input_shape`` (C, H, W) keywords.
        paper: citation of the architecture's paper.
        input_shape: the canonical input (224² for most, 299² for Inception v3).
        torchvision: name for ``torchvision.models.get_model`` of the identical
            model, or None when torchvision lacks it.
        torchvision_kwargs: extra kwargs for that builder (e.g. ``aux_logits``).
        ref_params: the published/reference parameter count, if any.
        ref_source: where ``ref_params`` comes from.
        defaults: default cfg passed to the builder (variants share a builder).
    """

    name: str
    family: str
    builder: Callable[..., Graph]
    paper: str
    input_shape: tuple[int, int, int] = (3, 224, 224)
    torchvision: str | None = None
    torchvision_kwargs: dict[str, Any] = field(default_factory=dict)
    ref_params: int | None = None
    ref_source: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)

    def build(self, **cfg: Any) -> Graph:
        kwargs = {**self.defaults, "input_shape": self.input_shape, **cfg}
        if isinstance(kwargs["input_shape"], int):
            kwargs["input_shape"] = (3, kwargs["input_shape"], kwargs["input_shape"])
        accepted = _parameters(self.builder)
        unknown = sorted(k for k in kwargs if k not in accepted)
        if unknown:
            options = ", ".join(k for k in accepted if k != "name")
            raise ArchlabError(f"model {self.name}: unknown option(s) {', '.join(unknown)}; it takes {options}")
        return self.builder(name=self.name, **kwargs)


    def min_input_size(self, *, start: int = 16, stop: int = 1024) -> int:
        """The smallest square input side (in steps of 1 from ``start``) the graph
        accepts, found by shape inference (no weights are built)."""
        for side in range(start, stop + 1):
            try:
                self.build(input_shape=(self.input_shape[0], side, side))
                return side
            except ArchlabError:
                continue
        raise ArchlabError(f"model {self.name}: no input side in [{start}, {stop}] fits")


_MODELS: dict[str, ModelInfo] = {}


def register_model(name: str, *, family: str, paper: str, **info: Any) -> Callable[[Callable[..., Graph]], Callable[..., Graph]]:
    """Decorator registering ``builder`` as zoo model ``name``.

    The same builder may be registered under several names with different
    ``defaults``. Registering a name twice raises ``ArchlabError``.
    """

    def deco(builder: Callable[..., Graph]) -> Callable[..., Graph]:
        add_model(ModelInfo(name=name, family=family, builder=builder, paper=paper, **info))
        return builder

    return deco


def add_model(info: ModelInfo) -> None:
    if info.name in _MODELS:
        raise ArchlabError(f"zoo model '{info.name}' is already registered")
    _MODELS[info.name] = info


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a glob (``resnet*``, case-insensitive), sorted naturally."""
    import re

    def natural(s: str):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]

    pattern = pattern.lower()
    return sorted((n for n in _MODELS if fnmatch.fnmatchcase(n.lower(), pattern)), key=natural)


def find_model(name: str) -> ModelInfo | None:
    """The registry entry named exactly ``name``, or ``None``: no case folding, no
    suggestions (for callers asking whether a graph or a spec *is* a zoo model,
    where a miss is the common case)."""
    return _MODELS.get(name)


def model_info(name: str) -> ModelInfo:
    """The registry entry of ``name``.

    Raises:
        ModelNotFoundError: with the closest names.
    """
    try:
        return _MODELS[name]
    except KeyError:
        import difflib

        folded = [n for n in _MODELS if n.lower() == name.lower()]
        if len(folded) == 1:  # ResNet50 -> resnet50
            return _MODELS[folded[0]]

        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `archlab zoo` lists the models"
        raise ModelNotFoundError(f"no zoo model named '{name}'{hint}") from None


def get_model(name: str, **cfg: Any) -> Graph:
    """Build zoo model ``name`` (``num_classes=``, ``input_shape=``, variant options)."""
    return model_info(name).build(**cfg)


@functools.lru_cache(maxsize=None)
def _parameters(builder) -> Mapping[str, Any]:
    """The keyword parameters a model builder accepts (inspected once per builder)."""
    import inspect

    return inspect.signature(builder).parameters
