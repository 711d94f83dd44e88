"""Side-by-side check of a zoo graph against torchvision's implementation.

:func:`compare_with_torchvision` builds both, perturbs torchvision's weights and
batch-norm statistics (a fresh model's BN is the identity, which would hide
mistakes), loads its ``state_dict`` into the compiled graph with
``strict=True`` and measures the largest output difference on one random input.
No weights are downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archlab.errors import ArchlabError


@dataclass
class Comparison:
    """The result of comparing an archlab model with a reference module.

    Fields:
        model: the zoo name.
        reference: what it was compared against (``torchvision:resnet50``).
        archlab_params: trainable parameter count from the IR (no torch).
        reference_params: ``sum(p.numel())`` of the reference module.
        state_dict_keys_equal: the two ``state_dict`` key lists are identical.
        max_abs_diff: max |archlab(x) - reference(x)| over every output.
        input_shape: the (N, C, H, W) input used.
        dtype: the dtype both ran in.
    """

    model: str
    reference: str
    archlab_params: int
    reference_params: int
    state_dict_keys_equal: bool
    max_abs_diff: float
    input_shape: tuple[int, ...]
    dtype: str

    @property
    def params_equal(self) -> bool:
        return self.archlab_params == self.reference_params

    def report(self) -> str:
        ok = lambda b: "yes" if b else "NO"  # noqa: E731
        return "\n".join([
            f"{self.model} vs {self.reference}",
            f"  parameters        archlab {self.archlab_params:,}   reference {self.reference_params:,}   equal: {ok(self.params_equal)}",
            f"  state_dict keys   identical: {ok(self.state_dict_keys_equal)} (loaded with strict=True)",
            f"  max |difference|  {self.max_abs_diff:.3g} on input {'x'.join(map(str, self.input_shape))} ({self.dtype}, eval mode)",
        ])


def randomize_(module, seed: int = 0) -> None:
    """Fill every parameter and buffer (e.g. of a model materialised with
    ``to_empty``): :func:`perturb_`'s rules for conv, linear and batch-norm
    layers; any other floating tensor ~ N(0, 0.1); integer buffers 0."""
    import torch

    done = perturb_(module, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if id(t) in done:
                continue
            if t.is_floating_point():
                t.normal_(0.0, 0.1, generator=gen)
            else:
                t.zero_()


def perturb_(module, seed: int = 0) -> set[int]:
    """Make outputs depend visibly on every layer: He-normal (fan-in) conv and
    linear weights, small random biases, and batch norms with non-trivial affine
    parameters and running statistics. (A fresh torchvision model's BN is the
    identity, and some inits make deep nets' logits nearly input-independent, so
    an equality test would prove little.) Returns the ids of the tensors written."""
    import math

    import torch

    gen = torch.Generator().manual_seed(seed)
    done: set[int] = set()

    def fill(t, kind: str, a: float, b: float) -> None:
        (t.normal_(a, b, generator=gen) if kind == "normal" else t.uniform_(a, b, generator=gen))
        done.add(id(t))

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)):
                fill(m.weight, "normal", 0.0, math.sqrt(2.0 / m.weight[0].numel()))
                if m.bias is not None:
                    fill(m.bias, "normal", 0.0, 0.1)
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                if m.affine:
                    fill(m.weight, "uniform", 0.5, 1.5)
                    fill(m.bias, "normal", 0.0, 0.1)
                if m.track_running_stats:
                    fill(m.running_mean, "normal", 0.0, 0.1)
                    fill(m.running_var, "uniform", 0.5, 1.5)
    return done


def torchvision_model(name: str, *, init: bool = True, **cfg: Any):
    """Build zoo model ``name``'s torchvision counterpart, freshly initialised
    (``init=False``: allocated but not initialised, for callers that fill every
    tensor themselves, such as :func:`randomize_`; skips torchvision's init)."""
    import torch
    import torchvision

    from archlab.zoo import model_info

    info = model_info(name)
    if info.torchvision is None:
        raise ArchlabError(f"model {name} has no torchvision counterpart (torchvision lacks {info.family} {name})")
    kwargs = {**info.torchvision_kwargs, **cfg}
    if init:
        return torchvision.models.get_model(info.torchvision, weights=None, **kwargs)
    with torch.device("meta"):
        model = torchvision.models.get_model(info.torchvision, weights=None, **kwargs)
    return model.to_empty(device="cpu")


def _outputs(y) -> dict:
    if isinstance(y, dict):
        return dict(y)
    return {"out": y}


def compare_modules(model: str, reference_name: str, graph, reference, *, batch: int = 1, seed: int = 0,
                    dtype: str = "float64", fill_all: bool = False) -> Comparison:
    """Give ``reference`` random weights (:func:`perturb_`, or :func:`randomize_`
    with ``fill_all`` for an uninitialised module), load them into the compiled
    ``graph`` (``strict=True``) and compare outputs on one random input."""
    import torch

    from archlab.torchio.compile import to_module

    torch.manual_seed(seed)
    tdtype = getattr(torch, dtype)
    reference.to(tdtype).eval()
    (randomize_ if fill_all else perturb_)(reference, seed)
    # assign=True: the compiled module takes the reference's tensors as they are
    # (no copy); the comparison is of the two architectures on equal weights.
    mine = to_module(graph, state_dict=reference.state_dict(), assign=True)
    shape = (batch, *graph.input_nodes[0].attrs["shape"])
    x = torch.randn(shape, dtype=tdtype, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        a, r = _outputs(mine(x)), _outputs(reference(x))
    if set(a) != set(r):
        raise ArchlabError(f"{model}: outputs {sorted(a)} vs reference outputs {sorted(r)}")
    diff = max(float((a[k] - r[k]).abs().max()) for k in a)
    return Comparison(
        model=model, reference=reference_name, archlab_params=graph.num_params(),
        reference_params=sum(p.numel() for p in reference.parameters()),
        state_dict_keys_equal=list(mine.state_dict()) == list(reference.state_dict()),
        max_abs_diff=diff, input_shape=shape, dtype=dtype,
    )


def compare_with_torchvision(name: str, *, input_shape: tuple[int, int, int] | None = None, batch: int = 1,
                             seed: int = 0, dtype: str = "float64", **cfg: Any) -> Comparison:
    """Compare zoo model ``name`` with torchvision's (see the module docstring).

    Args:
        input_shape: (C, H, W); defaults to the model's canonical input.
        cfg: model options shared by both builders (``num_classes``).
    """

    from archlab.zoo import get_model, model_info

    info = model_info(name)
    graph = get_model(name, **({"input_shape": input_shape} if input_shape else {}), **cfg)
    reference = torchvision_model(name, init=False, **cfg)
    return compare_modules(name, f"torchvision:{info.torchvision}", graph, reference, batch=batch, seed=seed,
                           dtype=dtype, fill_all=True)
