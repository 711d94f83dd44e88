"""Import coverage: which torchvision and timm models :func:`from_torch` takes,
and whether each import is exact.

A model is *exact* when four checks hold against the original module:

* params: the graph's trainable parameters equal the parameters the forward
  uses (all of ``model.parameters()`` except those of parts the eval forward
  never touches, such as Inception's auxiliary heads; both figures are kept);
* torchvision: the graph's MACs under the ``torchvision`` convention equal
  ``FlopCounterMode`` / 2 on the original module;
* fvcore: the graph's MACs under the ``fvcore`` convention equal fvcore's
  ``FlopCountAnalysis`` total on the original module;
* outputs: the compiled graph, given the module's ``state_dict``
  (``strict=True``), computes the module's outputs in float64 to a relative
  difference of at most ``1e-6`` on one seeded random input (weights perturbed
  first, so batch norm is not the identity and layer scales are not ~0).

No weights are downloaded: torchvision models are built with ``weights=None``
(and ``weights_backbone=None``), timm models with ``pretrained=False``.
``benchmarks/import_coverage.py`` runs the lists and prints the table.
"""
from __future__ import annotations

import copy
import gc
import re
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from archlab.torchio.coverage_models import (  # noqa: F401  (re-exported)
    DEFAULT_INPUT,
    SOURCES,
    TIMM_MODELS,
    TORCHVISION_INPUT,
    TORCHVISION_MODELS,
    ModelSpec,
    Shape,
    meta_params,
    model_specs,
)

TOLERANCE = 1e-6  # max |compiled - reference| / max |reference|, float64


@dataclass
class CoverageResult:
    """What :func:`check_model` found for one model.

    The four ``*_ok`` fields are ``True``/``False``, or ``None`` when the check
    did not run (the import failed, ``outputs=False``, or a peer tool failed:
    ``notes`` says which). ``exact`` needs all four ``True``.
    """

    name: str
    source: str  # "torchvision", "timm" or "" (a module checked directly)
    input_shape: Shape
    built: bool = True  # False: the builder itself failed (reason says why); not an import failure
    imported: bool = False
    reason: str = ""  # first line of the import error ("crash: Type: msg" for a non-archlab exception)
    crashed: bool = False  # the importer raised something other than ArchlabError: a bug
    problems: int = 0  # nodes the importer could not express
    kinds: dict[str, int] = field(default_factory=dict)  # unsupported kind -> nodes, from the error
    import_s: float = 0.0
    nodes: int = 0
    params_ok: bool | None = None
    torchvision_ok: bool | None = None
    fvcore_ok: bool | None = None
    outputs_ok: bool | None = None
    strict_ok: bool | None = None  # the full state_dict loaded with strict=True
    max_rel_diff: float | None = None
    params_model: int | None = None  # sum(p.numel() for p in model.parameters())
    params_used: int | None = None  # of which the forward touches
    params_graph: int | None = None
    unused_params: list[str] = field(default_factory=list)  # parameter names the forward never touches
    macs_torchvision: int | None = None  # archlab, "torchvision" convention
    macs_flop_counter: int | None = None  # FlopCounterMode / 2
    macs_fvcore: int | None = None  # archlab, "fvcore" convention
    macs_fvcore_ref: int | None = None  # fvcore's FlopCountAnalysis total
    fvcore_skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # why a check failed or did not run

    @property
    def exact(self) -> bool:
        return self.imported and all(v is True for v in (self.params_ok, self.torchvision_ok, self.fvcore_ok,
                                                         self.outputs_ok))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "input_shape": list(self.input_shape), "exact": self.exact}


def _first_line(e: BaseException) -> str:
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)


def _short(e: BaseException) -> str:
    text = _first_line(e)
    return f"{type(e).__name__}: {text if len(text) <= 200 else text[:197] + '...'}"


_KIND = re.compile(r"^\s*-\s+(\S.*?) x(\d+)\b", re.MULTILINE)  # "  - Tensor.view x32, first in ..."


def _import(model, input_shape: Shape, result: CoverageResult):
    from archlab.errors import ArchlabError
    from archlab.torchio import from_torch

    t = time.perf_counter()
    try:
        graph = from_torch(model, input_shape)
    except ArchlabError as e:  # ImportTorchError and anything the graph layer refuses
        result.reason = _first_line(e)
        result.kinds = {k: int(n) for k, n in _KIND.findall(str(e))}
        result.problems = len(getattr(e, "nodes", ())) or sum(result.kinds.values()) or 1
        return None
    except Exception as e:  # noqa: BLE001 - a bug in the importer: record, never stop the run
        result.reason, result.crashed = f"crash: {_short(e)}", True
        return None
    finally:
        result.import_s = time.perf_counter() - t
    result.imported, result.nodes = True, len(graph)
    return graph


def _flop_counter(model, input_shape: Shape) -> tuple[int, set[str]]:
    """FlopCounterMode / 2 on a copy of ``model`` (meta device, or CPU when a model
    cannot run on meta), and the names of the parameters that forward touched."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_leaves

    from archlab.torchio.peers import flop_counter_macs

    class Uses(TorchFunctionMode):
        """Records the parameters passed to torch functions while ``armed``
        (during the forward: flop_counter_macs's own ``.to()`` touches them all)."""

        def __init__(self, module):
            super().__init__()
            self.params = {id(p): n for n, p in module.named_parameters()}
            self.seen, self.armed = set(), False
            self.hooks = [module.register_forward_pre_hook(lambda *_: self.arm(True)),
                          module.register_forward_hook(lambda *_: self.arm(False))]

        def arm(self, on: bool) -> None:  # returns None: a pre-hook's result would replace the input
            self.armed = on

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if self.armed:
                self.seen.update(self.params[id(t)] for t in tree_leaves((args, kwargs))
                                 if isinstance(t, torch.Tensor) and id(t) in self.params)
            return func(*args, **kwargs)

    for device in ("meta", "cpu"):
        twin = copy.deepcopy(model).to(device)  # flop_counter_macs moves its module; keep the original
        uses = Uses(twin)
        try:
            with uses:
                return flop_counter_macs(twin, input_shape, meta=device == "meta"), uses.seen
        except Exception:
            if device == "cpu":
                raise
        finally:
            del twin, uses
    raise AssertionError("unreachable")


def _counts(model, graph, input_shape: Shape, result: CoverageResult) -> None:
    from archlab.analysis import mac_counts
    from archlab.torchio.peers import fvcore_macs

    params = dict(model.named_parameters())
    result.params_model = sum(p.numel() for p in params.values())
    result.params_graph = graph.num_params()
    try:
        result.macs_flop_counter, used = _flop_counter(model, input_shape)
        unused = [n for n in params if n not in used]
        result.unused_params = unused
        result.params_used = result.params_model - sum(params[n].numel() for n in unused)
        if unused:
            result.notes.append(f"the forward never touches {len(unused)} parameter(s) "
                                f"({result.params_model - result.params_used:,} elements), e.g. {unused[0]}")
    except Exception as e:  # noqa: BLE001
        result.notes.append(f"FlopCounterMode failed: {_short(e)}")
        result.params_used = result.params_model
    result.params_ok = result.params_graph == result.params_used
    if not result.params_ok:
        result.notes.append(f"params: graph {result.params_graph:,} vs forward {result.params_used:,}")
    for convention in ("torchvision", "fvcore"):
        counts = mac_counts(graph, convention)
        setattr(result, f"macs_{convention}", counts.total)
        if counts.unsupported:
            result.notes.append(f"{convention} MACs: no rule for {len(counts.unsupported)} node(s), "
                                f"e.g. {counts.unsupported[0]}")
    if result.macs_flop_counter is not None:
        result.torchvision_ok = result.macs_torchvision == result.macs_flop_counter
        if not result.torchvision_ok:
            result.notes.append(f"torchvision MACs: archlab {result.macs_torchvision:,} vs "
                                f"FlopCounterMode/2 {result.macs_flop_counter:,}")
    try:
        result.macs_fvcore_ref, result.fvcore_skipped = fvcore_macs(model, input_shape)
        result.fvcore_ok = result.macs_fvcore == result.macs_fvcore_ref
        if not result.fvcore_ok:
            result.notes.append(f"fvcore MACs: archlab {result.macs_fvcore:,} vs fvcore {result.macs_fvcore_ref:,}")
    except Exception as e:  # noqa: BLE001
        result.notes.append(f"fvcore failed: {_short(e)}")


def _as_outputs(y) -> list[tuple[str, Any]]:
    """A forward's result as ``(key, tensor)`` pairs: a tensor is ``out``."""
    if isinstance(y, dict):
        return list(y.items())
    if isinstance(y, tuple) and hasattr(y, "_fields"):
        return list(zip(y._fields, y))
    if isinstance(y, (tuple, list)):
        return [(str(i), v) for i, v in enumerate(y)]
    return [("out", y)]


def perturb_all_(model, seed: int = 0) -> None:
    """:func:`~archlab.torchio.compare.perturb_` (conv, linear, batch norm), then
    N(0, 0.1) noise added to every other floating parameter, so layer norms,
    layer scales (timm's 1e-5 init) and embeddings all show in the outputs."""
    import torch

    from archlab.torchio.compare import perturb_

    done = perturb_(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if id(p) not in done and p.is_floating_point():
                p.add_(torch.randn(p.shape, dtype=p.dtype, generator=gen) * 0.1)


def _without_unused(model, state: dict, unused: set[str]) -> dict:
    """``state`` less the keys of modules whose every parameter the forward never
    touches (Inception's auxiliary heads: their weights and batch-norm statistics)."""
    dead = [m + "." for m, mod in model.named_modules() if m and (names := [f"{m}.{n}" for n, _ in
            mod.named_parameters()]) and all(n in unused for n in names)]
    return {k: v for k, v in state.items() if k not in unused and not any(k.startswith(d) for d in dead)}


def _outputs(model, graph, input_shape: Shape, result: CoverageResult, seed: int) -> None:
    import torch

    from archlab.torchio.compile import to_module

    model.double().eval()
    perturb_all_(model, seed)
    state = model.state_dict()
    try:
        compiled = to_module(graph, state_dict=state, assign=True)
        result.strict_ok = True
    except Exception as e:  # noqa: BLE001 - e.g. the keys of heads the forward never calls
        result.strict_ok = False
        kept = _without_unused(model, state, set(result.unused_params))
        result.notes.append(f"strict state_dict: {_short(e)}; loading it strictly without the "
                            f"{len(state) - len(kept)} key(s) of parts the forward never touches")
        compiled = to_module(graph, state_dict=kept, assign=True)  # still strict: a failure fails the check
    compiled.double().eval()
    x = torch.randn((1, *input_shape), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref, got = _as_outputs(model(x)), _as_outputs(compiled(x))
    if len(ref) != len(got):
        result.outputs_ok = False
        result.notes.append(f"outputs: reference returns {[k for k, _ in ref]}, graph {[k for k, _ in got]}")
        return
    worst = 0.0
    for (key, r), (_, a) in zip(ref, got):
        if tuple(r.shape) != tuple(a.shape):
            result.outputs_ok = False
            result.notes.append(f"outputs: '{key}' is {tuple(a.shape)}, reference {tuple(r.shape)}")
            return
        scale = float(r.abs().max()) or 1.0
        worst = max(worst, float((a - r).abs().max()) / scale)
    result.max_rel_diff = worst
    result.outputs_ok = worst <= TOLERANCE
    if worst > TOLERANCE:
        result.notes.append(f"outputs: max relative difference {worst:.3g} > {TOLERANCE:g}")


def check_model(model, input_shape: Shape, *, name: str | None = None, source: str = "",
                outputs: bool = True, seed: int = 0) -> CoverageResult:
    """Import ``model`` and run the four checks of the module docstring.

    Args:
        model: an ``nn.Module`` in eval mode, float32 on the CPU. With
            ``outputs=True`` it is changed: float64, weights perturbed.
        input_shape: one input (C, H, W), batch excluded.
        name: the result's name (default: the class name).
        source: where the model came from, for the report.
        outputs: run the float64 output comparison (the slowest check).
        seed: of the weight perturbation and the random input.

    Returns:
        A :class:`CoverageResult`; never raises for a model's failure (an import
        error, a crash, a failing peer tool are recorded in it).
    """
    result = CoverageResult(name or type(model).__name__, source, tuple(input_shape))
    # Not under no_grad: fvcore's count of nn.MultiheadAttention depends on it (no_grad
    # takes torch's fused fast path, which fvcore counts as 0); users call it with grad on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and peer-tool warnings are not the model's result
        graph = _import(model, result.input_shape, result)
        if graph is None:
            return result
        steps = [(lambda: _counts(model, graph, result.input_shape, result),
                  ("params_ok", "torchvision_ok", "fvcore_ok"))]
        if outputs:
            steps.append((lambda: _outputs(model, graph, result.input_shape, result, seed), ("outputs_ok",)))
        for step, owned in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - a failing check is a result, not the end of the run
                result.notes.append(f"check failed: {_short(e)}")
                for check in owned:
                    if getattr(result, check) is None:
                        setattr(result, check, False)
    return result


def check(spec: ModelSpec, *, outputs: bool = True, seed: int = 0) -> CoverageResult:
    """Build ``spec``'s model and :func:`check_model` it; memory is freed after."""
    try:
        shape = spec.input_shape()
        model = spec.build()
    except Exception as e:  # noqa: BLE001
        return CoverageResult(spec.name, spec.source, (), built=False, reason=f"build failed: {_short(e)}")
    try:
        return check_model(model, shape, name=spec.name, source=spec.source, outputs=outputs, seed=seed)
    finally:
        del model
        gc.collect()


def check_all(specs: Iterable[ModelSpec], *, outputs: bool = True,
              progress: Callable[[ModelSpec], None] | None = None) -> list[CoverageResult]:
    """:func:`check` each spec in turn; ``progress(spec)`` is called before each."""
    results = []
    for spec in specs:
        if progress is not None:
            progress(spec)
        try:
            results.append(check(spec, outputs=outputs))
        except MemoryError:  # a result of its own: the next, smaller model may fit
            gc.collect()
            results.append(CoverageResult(spec.name, spec.source, (), reason="crash: MemoryError", crashed=True))
    return results


def failure_key(result: CoverageResult) -> list[str]:
    """What a failed import is grouped under: each unsupported kind, or its
    reason with the class name and input size taken out."""
    if result.kinds:
        return [f"unsupported {k}" for k in result.kinds]
    text = re.sub(r"^cannot import [\w.<>]+: ", "", result.reason)
    return [re.sub(r"\b1x\d+x\d+x\d+\b", "<input>", text)]


@dataclass
class Summary:
    """Counts over a run's built models (a failed build counts in none)."""

    models: int
    imported: int
    params_ok: int
    torchvision_ok: int
    fvcore_ok: int
    outputs_ok: int
    exact: int
    failures: dict[str, list[str]]  # failure_key -> "source:name" of the models failing so
    not_built: list[str]

    @property
    def import_rate(self) -> float:
        return self.imported / self.models if self.models else 0.0

    def line(self) -> str:
        return (f"imported {self.imported} of {self.models} ({100 * self.import_rate:.0f} %); exact "
                f"params/torchvision/fvcore/outputs on {self.params_ok}/{self.torchvision_ok}/{self.fvcore_ok}/"
                f"{self.outputs_ok} of {self.imported} (all four: {self.exact})")


def summarize(results: list[CoverageResult]) -> Summary:
    built = [r for r in results if r.built]
    imported = [r for r in built if r.imported]
    failures: dict[str, list[str]] = {}
    for r in built:
        if not r.imported:
            for key in failure_key(r):
                failures.setdefault(key, []).append(f"{r.source}:{r.name}")
    return Summary(
        models=len(built), imported=len(imported),
        **{k: sum(getattr(r, k) is True for r in imported) for k in ("params_ok", "torchvision_ok", "fvcore_ok",
                                                                        "outputs_ok")},
        exact=sum(r.exact for r in imported),
        failures=dict(sorted(failures.items(), key=lambda kv: -len(kv[1]))),
        not_built=[f"{r.source}:{r.name} ({r.reason})" for r in results if not r.built],
    )
