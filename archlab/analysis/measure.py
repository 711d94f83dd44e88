"""Measure what a real inference forward holds, to check :mod:`archlab.analysis.memory`.

Two measurements of one ``module(*inputs)`` call in eval mode under
``torch.no_grad()`` (after one warm-up call), both counting the inputs, which the
caller holds through the forward:

* :func:`tensor_peak_bytes`: the most bytes held at once by the tensors the
  forward's aten ops return (distinct storages; parameters and buffers left
  out), sampled after each op, while its inputs are still referenced. This is
  what :func:`~archlab.analysis.memory.activation_memory`'s peak defines, and
  ``tests/test_memory.py`` checks the two agree to the byte.
* :func:`allocator_peak_bytes`: the allocator's own peak: on the CPU the
  profiler's record of the c10 CPU allocator (``profile_memory=True``), on CUDA
  ``torch.cuda.max_memory_allocated``. It also sees memory a kernel allocates
  and frees inside one call (oneDNN weight reorders and scratchpads, cuDNN
  workspaces), which no graph-level count can, and on CUDA the caching
  allocator's rounding of each block to 512 bytes.

And one of a training forward: :func:`saved_tensor_bytes`, the bytes autograd
saves for backward, which :func:`~archlab.analysis.train_memory.training_memory`'s
``activations`` defines.

These need torch; nothing else in :mod:`archlab.analysis` does.
"""
from __future__ import annotations

from typing import Any


def _storages(value: Any, out: list) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        out.append(value.untyped_storage())
    elif isinstance(value, (tuple, list)):
        for v in value:
            _storages(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _storages(v, out)


def _held_storages(inputs) -> list:
    held: list = []
    _storages(list(inputs), held)
    return held


def _input_bytes(inputs) -> int:
    return sum({s.data_ptr(): s.nbytes() for s in _held_storages(inputs)}.values())


def _warm_up(module, inputs) -> None:
    import torch

    module.eval()
    with torch.no_grad():
        module(*inputs)


def saved_tensor_bytes(module, *inputs) -> int:
    """Bytes of the distinct storages autograd saves in a training forward of
    ``module(*inputs)`` (put in train mode), parameters and buffers excluded:
    what ``training_memory(...).activations`` counts."""
    import torch

    module.train()
    own = {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}
    saved: dict[int, torch.Tensor] = {}  # keeps every saved storage alive, so no address is reused

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in own:
            saved.setdefault(ptr, t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(*inputs)
    total = sum(t.untyped_storage().nbytes() for t in saved.values())
    del out
    return total


def tensor_peak_bytes(module, *inputs) -> int:
    """Peak bytes of the inputs plus the live tensors an inference forward's
    aten ops create (see the module docstring).

    Args:
        module: an ``nn.Module`` (put in eval mode).
        inputs: its positional inputs, on the module's device.

    Returns:
        The peak in bytes.
    """
    import torch
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode

    _warm_up(module, inputs)
    own = {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}
    held = _input_bytes(inputs)
    own |= {s.data_ptr() for s in _held_storages(inputs)}

    class Track(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live: dict[int, tuple[Any, int]] = {}  # data_ptr -> (weak storage, bytes)
            self.peak = held

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            live = self.live
            for ptr in [p for p, (ref, _) in live.items() if ref.expired()]:
                del live[ptr]  # freed: its address may be reused by this op's output
            new: list = []
            _storages(out, new)
            for st in new:
                ptr = st.data_ptr()
                if st.nbytes() and ptr not in own and ptr not in live:
                    live[ptr] = (StorageWeakRef(st), st.nbytes())
            self.peak = max(self.peak, held + sum(b for _, b in live.values()))
            return out

    with torch.no_grad(), Track() as track:
        result = module(*inputs)
    del result
    return track.peak


def allocator_peak_bytes(module, *inputs) -> int:
    """The allocator's peak during an inference forward, inputs included (see
    the module docstring): the CPU allocator through ``torch.profiler``, or
    ``torch.cuda.max_memory_allocated`` when the inputs are on a CUDA device.

    Args:
        module: an ``nn.Module`` (put in eval mode), on the inputs' device.
        inputs: its positional inputs.

    Returns:
        The peak in bytes.
    """
    import torch

    _warm_up(module, inputs)
    held = _input_bytes(inputs)
    device = _held_storages(inputs)[0].device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.no_grad():
            result = module(*inputs)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del result
        return held + peak
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = module(*inputs)
    del result
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        stack.extend(e.children)
        if e.typed[0] == _EventType.Allocation and e.typed[1].device.type == "cpu":
            events.append((e.start_time_ns, e.typed[1].alloc_size, e.typed[1].total_allocated))
    if not events:
        return held
    events.sort()
    # The reporter's running total counts every block it saw allocated since any
    # profiling began and not yet freed: what was live before this forward is the
    # baseline.
    _, size, total = events[0]
    base = total - size
    return held + max(t for _, _, t in events) - base
