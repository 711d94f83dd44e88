"""How close is ``archlab analyze``'s peak memory to what a real forward uses?

For each model: archlab's inference peak (``activation_memory``), the peak of
the tensors a real eval forward of the compiled module holds (which the peak
defines: equal to the byte), and the allocator's peak (the CPU allocator seen by
``torch.profiler``; ``torch.cuda.max_memory_allocated`` with ``--device cuda``),
which adds what kernels allocate and free inside one call (oneDNN weight
reorders and scratchpads, cuDNN workspaces) and the CUDA allocator's 512-byte
rounding. All three count the input (the caller holds it), none the weights.

    OMP_NUM_THREADS=1 python benchmarks/memory_honesty.py
    python benchmarks/memory_honesty.py --device cuda --batch 8
    python benchmarks/memory_honesty.py --models resnet50 --input 3x512x512 --no-mkldnn

Prints one row per model and exits 1 if archlab's peak differs from the
tensors' peak or exceeds the allocator's.
"""
from __future__ import annotations

import argparse
import sys
import time

MODELS = ["resnet18", "resnet50", "vgg16", "mobilenet_v2", "densenet121", "googlenet", "fcn8s", "unet", "segnet"]
INPUT = {"unet": (3, 188, 188)}  # U-Net's valid convolutions need 188 + 16k


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.lower().split("x"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--input", type=_shape, default=None, help="CxHxW for every model (default 3x224x224)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-mkldnn", action="store_true", help="CPU: use PyTorch's native kernels, not oneDNN")
    args = p.parse_args(argv)

    import torch

    import archlab
    from archlab.analysis.measure import allocator_peak_bytes, tensor_peak_bytes
    from archlab.analysis.memory import activation_memory

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("memory_honesty: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    torch.backends.mkldnn.enabled = not args.no_mkldnn
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}, torch {torch.__version__}, batch {args.batch}, float32"
          f"{', oneDNN off' if args.no_mkldnn else ''}")
    head = f"{'model':<14} {'input':<11} {'archlab peak':>14} {'tensors peak':>14} {'allocator peak':>15} {'archlab/alloc':>13}"
    print(head)
    print("-" * len(head))
    bad = 0
    ratios = []
    for model in args.models:
        shape = args.input or INPUT.get(model, (3, 224, 224))
        t0 = time.perf_counter()
        graph = archlab.get_model(model, input_shape=shape)
        counted = activation_memory(graph, batch=args.batch).peak_bytes
        torch.manual_seed(0)
        module = archlab.to_module(graph).to(device)
        x = torch.randn(args.batch, *shape, device=device)
        tensors = tensor_peak_bytes(module, x)
        alloc = allocator_peak_bytes(module, x)
        ratios.append(counted / alloc)
        flag = "" if counted == tensors and counted <= alloc else "  MISMATCH"
        bad += bool(flag)
        print(f"{model:<14} {'x'.join(map(str, shape)):<11} {counted:>14,} {tensors:>14,} {alloc:>15,} "
              f"{counted / alloc:>13.3f}{flag}   ({time.perf_counter() - t0:.0f} s)")
        del module, x
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"archlab/allocator: min {min(ratios):.3f}, max {max(ratios):.3f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
