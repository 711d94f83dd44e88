"""What a trace must leave as it found it: every module's attributes.

Tracing runs the model's own Python, which may change it: training flags
(leaves run in eval mode), buffers written in forward, and caches filled on the
first call (timm's LeViT and TinyViT keep ``attention_bias_cache`` dicts, which
a trace would fill with fx proxies that later calls of the model read back).
:class:`ModuleState` snapshots each module's ``__dict__``, the contents of the
containers in it, and the buffers' values, and puts them all back."""
from __future__ import annotations

import torch

_CONTAINERS = (dict, list, set)
_CORE = ("_parameters", "_buffers", "_modules")  # torch's own containers a model's code may change; hooks are left


class ModuleState:
    """A snapshot of ``module`` and its submodules; :meth:`restore` puts it back."""

    def __init__(self, module: torch.nn.Module):
        self.attrs = {m: dict(vars(m)) for m in module.modules()}
        self.contents = {(m, k): v.copy() for m, attrs in self.attrs.items() for k, v in attrs.items()
                         if isinstance(v, _CONTAINERS) and (k in _CORE or not k.startswith("_"))}
        self.buffers = [(b, b.clone()) for b in module.buffers()]  # code that writes a buffer is undone
        self.tensors = [(t, t.clone()) for attrs in self.attrs.values() for t in attrs.values()
                        if isinstance(t, torch.Tensor) and not isinstance(t, torch.nn.Parameter)]  # s.count += 1
        self.versions = {name: (p, p._version) for name, p in module.named_parameters()}

    def changed_parameters(self) -> list[str]:
        """Parameters written in place since the snapshot (not restored: copying
        every weight would double an import's memory; the caller refuses)."""
        return [name for name, (p, version) in self.versions.items() if p._version != version]

    def restore(self) -> None:
        for m, attrs in self.attrs.items():
            d = vars(m)
            for k in [k for k in d if k not in attrs]:  # attributes the trace added
                del d[k]
            d.update(attrs)
        for (m, k), copy in self.contents.items():
            v = self.attrs[m][k]
            if isinstance(v, list):
                v[:] = copy
            else:
                v.clear()
                v.update(copy)
        with torch.no_grad():
            for b, value in (*self.buffers, *self.tensors):
                b.copy_(value)
