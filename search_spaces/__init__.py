"""The search-space registry.

A *search space* is a define-by-run function of an Optuna trial that returns an
archlab graph::

    @register_space("tiny", description="one conv, width 16-64")
    def tiny(trial):
        b = archlab.GraphBuilder("tiny")
        x = b.conv2d(b.input((3, 32, 32)), trial.suggest_categorical("width", [16, 32, 64]), 3)
        ...
        return b.build()

Contract of a space function ``space(trial) -> archlab.Graph``:

* it makes its decisions only through ``trial.suggest_*`` (so every Optuna
  sampler, ``optuna.trial.FixedTrial`` included, can drive it), in an order that
  depends only on earlier answers (samplers that decide autoregressively follow
  the suggestion order);
* it returns a valid :class:`archlab.Graph` (the analyzers and constraints run
  on it before any evaluation) and has no other side effects.

A space gets its reward one of two ways:

* an *evaluator factory*: ``evaluator(**options)`` returns a callable
  ``(trial, graph) -> float``, the reward of the trial's graph (higher is
  better), called once per trial after the space has returned ``graph``
  (``nasbench201`` looks its rewards up in a table);
* a *task* (``"seg"`` or ``"cls"``): every candidate is trained briefly on the
  search's data and its validation metric is the reward
  (:mod:`archlab.search.trained`). Such a space should also have a *factory*
  ``factory(*, num_classes, input_shape) -> space function``, so its
  candidates take the data's image size and class count.

Built-in spaces live in the modules of this package (every module not starting
with ``_`` is imported on the first lookup and registers its spaces). A user's
space is a ``.py`` file defining ``space(trial)``; it may also define
``evaluator`` (a factory as above) or ``TASK = "seg"`` / ``"cls"`` (train for
the reward) with an optional ``make_space(*, num_classes, input_shape)``, and a
module docstring (its description).
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from archlab.errors import ArchlabError, UserCodeError
from archlab.graph import Graph

SpaceFn = Callable[[Any], Graph]
"""``space(trial) -> Graph`` (``trial``: an ``optuna.trial.BaseTrial``)."""

EvaluatorFactory = Callable[..., Callable[[Any, Graph], float]]
"""``evaluator(**options)`` -> a callable ``(trial, graph) -> reward``."""


@dataclass(frozen=True)
class Space:
    """A registered (or loaded) search space; calling it samples a graph.

    Fields:
        name: the registry name, or the file's path for a user's space.
        fn: the space function ``fn(trial) -> Graph``.
        description: one line for listings.
        evaluator: the evaluator factory, or ``None``.
        source: ``"builtin"`` or the path of the user's file.
        task: ``"seg"`` / ``"cls"`` when candidates are trained for their reward, else ``None``.
        factory: ``factory(*, num_classes, input_shape) -> fn`` (a trained space at the data's size), or ``None``.
    """

    name: str
    fn: SpaceFn
    description: str = ""
    evaluator: Optional[EvaluatorFactory] = None
    source: str = "builtin"
    task: Optional[str] = None
    factory: Optional[Callable[..., SpaceFn]] = None

    def __call__(self, trial: Any) -> Graph:
        """Run the space on ``trial`` and return its graph.

        Raises:
            ArchlabError: the space returned something other than an archlab
                ``Graph`` (errors raised by the space itself pass through).
        """
        graph = self.fn(trial)
        if not isinstance(graph, Graph):
            raise ArchlabError(
                f"search space '{self.name}' returned a {type(graph).__name__}, not an archlab Graph; "
                "end the space function with `return builder.build()`"
            )
        return graph


_SPACES: dict[str, Space] = {}
_BUILTINS_LOADED = False


def register_space(name: str, *, description: str, evaluator: Optional[EvaluatorFactory] = None,
                   task: Optional[str] = None, factory: Optional[Callable[..., SpaceFn]] = None
                   ) -> Callable[[SpaceFn], SpaceFn]:
    """Decorator registering ``fn(trial) -> Graph`` as search space ``name``.

    Args:
        name: the name ``--space`` takes; must be new.
        description: one line for ``list_spaces`` and the CLI.
        evaluator: an evaluator factory (see the module docstring), or ``None``.
        task: ``"seg"`` or ``"cls"``: candidates are trained for their reward.
        factory: for a task: the space function at another input size and class count.

    Returns:
        The decorator; it returns the function unchanged.

    Raises:
        ArchlabError: the name is empty, contains a path separator or ends in
            ``.py`` (it would be read as a file), or is already registered.
    """
    if not name or "/" in name or "\\" in name or name.endswith(".py"):
        raise ArchlabError(f"invalid search space name {name!r}: use a plain name such as 'nasbench201'")

    def deco(fn: SpaceFn) -> SpaceFn:
        if name in _SPACES:
            raise ArchlabError(f"search space '{name}' is already registered (by {_SPACES[name].fn.__module__})")
        _SPACES[name] = Space(name, fn, description, evaluator, task=task, factory=factory)
        return fn

    return deco


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _BUILTINS_LOADED = True


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def load_space_file(path: str | Path) -> Space:
    """Load a user's space from a ``.py`` file defining ``space(trial)``.

    The file is executed as a fresh module each time (edits are picked up).
    Optional module-level names: ``evaluator`` (an evaluator factory) and a
    docstring (the description).

    Raises:
        ArchlabError: the file is missing or defines no callable ``space``.
        UserCodeError: the file raises while it is imported (the exception's
            type and message are quoted; ``__cause__`` is the exception).
    """
    path = Path(path)
    if not path.is_file():
        raise ArchlabError(f"search space file {str(path)!r} does not exist")
    mod_name = "_archlab_user_space_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ArchlabError(f"search space file {str(path)!r} cannot be imported as Python (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and pickling look a class's module up there
    try:
        spec.loader.exec_module(module)
    except BaseException as e:  # a user's file may raise anything (SystemExit too); report it on one line
        del sys.modules[mod_name]
        if isinstance(e, KeyboardInterrupt):
            raise
        raise UserCodeError(f"search space file {str(path)!r} raised {type(e).__name__} on import: {e}") from e
    fn = getattr(module, "space", None)
    if not callable(fn):
        what = "defines no function `space`" if fn is None else f"defines `space` as a {type(fn).__name__}"
        raise ArchlabError(f"search space file {str(path)!r} {what}; define `def space(trial):` returning an archlab Graph")
    doc = (module.__doc__ or "").strip().splitlines()
    evaluator, task, factory = getattr(module, "evaluator", None), getattr(module, "TASK", None), getattr(module, "make_space", None)
    if task is not None and task not in ("seg", "cls"):
        raise ArchlabError(f"search space file {str(path)!r} sets TASK = {task!r}; use 'seg' or 'cls' (train for the reward)")
    if task is not None and evaluator is not None:
        raise ArchlabError(f"search space file {str(path)!r} defines both `evaluator` and TASK; keep one "
                           "(TASK trains every candidate for its reward, evaluator computes it)")
    if factory is not None and not callable(factory):
        raise ArchlabError(f"search space file {str(path)!r} defines make_space as a {type(factory).__name__}; "
                           "define `def make_space(*, num_classes, input_shape):` returning a space function")
    return Space(str(path), fn, doc[0] if doc else f"user space {path.name}", evaluator, str(path),
                 task=task, factory=factory if task else None)


def get_space(name_or_path: str) -> Space:
    """The space registered as ``name_or_path``, or loaded from that ``.py`` file
    (a spec ending in ``.py`` or containing a path separator is a file).

    Raises:
        ArchlabError: an unknown name (naming the closest registered ones) or a
            file :func:`load_space_file` rejects.
    """
    if _is_path(name_or_path):
        return load_space_file(name_or_path)
    _load_builtins()
    try:
        return _SPACES[name_or_path]
    except KeyError:
        close = difflib.get_close_matches(name_or_path, _SPACES, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ArchlabError(
            f"unknown search space '{name_or_path}'; {hint}known spaces: {', '.join(sorted(_SPACES))} "
            "(or give the path of a .py file defining space(trial))"
        ) from None


def list_spaces() -> dict[str, Space]:
    """Every registered space, by name (sorted; a copy)."""
    _load_builtins()
    return dict(sorted(_SPACES.items()))


__all__ = ["Space", "register_space", "get_space", "list_spaces", "load_space_file"]
