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


def perturb_(module, seed: int = 0) -> None:
    """Make outputs depend visibly on every layer: He-normal (fan-in) conv and
    linear weights, small random biases, and batch norms with non-trivial affine
    parameters and running statistics. (A fresh torchvision model's BN is the
    identity, and some inits make deep nets' logits nearly input-independent, so
    an equality test would prove little.)"""
    import math

    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                if m.track_running_stats:
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def torchvision_model(name: str, **cfg: Any):
    """Build zoo model ``name``'s torchvision counterpart, freshly initialised."""
    import torchvision

    from archlab.zoo import model_info

    info = model_info(name)
    if info.torchvision is None:
        raise ArchlabError(f"model {name} has no torchvision counterpart (torchvision lacks {info.family} {name})")
    kwargs = {**info.torchvision_kwargs, **cfg}
    return torchvision.models.get_model(info.torchvision, weights=None, **kwargs)


def _outputs(y) -> dict:
    if isinstance(y, dict):
        return dict(y)
    return {"out": y}


def compare_modules(model: str, reference_name: str, graph, reference, *, batch: int = 1, seed: int = 0, dtype: str = "float64") -> Comparison:
    """Load ``reference``'s weights into the compiled ``graph`` and compare outputs."""
    import torch

    from archlab.torchio.compile import to_module

    torch.manual_seed(seed)
    perturb_(reference, seed)
    reference.eval()
    mine = to_module(graph, state_dict=reference.state_dict())
    tdtype = getattr(torch, dtype)
    mine.to(tdtype).eval()
    reference.to(tdtype)
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
    import torch

    from archlab.zoo import get_model, model_info

    info = model_info(name)
    graph = get_model(name, **({"input_shape": input_shape} if input_shape else {}), **cfg)
    torch.manual_seed(seed)
    reference = torchvision_model(name, **cfg)
    return compare_modules(name, f"torchvision:{info.torchvision}", graph, reference, batch=batch, seed=seed, dtype=dtype)
