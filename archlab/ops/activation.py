"""Element-wise activations: shape-preserving, parameter-free."""
from __future__ import annotations

from archlab.ops.base import Op, register_op


class Activation(Op):
    """An element-wise function; subclasses name the torch function to call."""

    torch_fn: str = ""  # "module.attr" resolved lazily, e.g. "torch.nn.functional.relu"

    def infer_shape(self, node, shapes):
        return shapes[0]

    def emit(self, ctx, node, args, shapes):
        import importlib

        mod, _, attr = self.torch_fn.rpartition(".")
        return ctx.call_function(getattr(importlib.import_module(mod), attr), args)


def _activation(op_name: str, fn: str, doc: str) -> type[Op]:
    cls = type(op_name.title().replace("_", ""), (Activation,), {"name": op_name, "torch_fn": fn, "doc": doc})
    return register_op(cls)


_activation("relu", "torch.nn.functional.relu", "max(x, 0)")
_activation("relu6", "torch.nn.functional.relu6", "min(max(x, 0), 6) (MobileNet)")
_activation("sigmoid", "torch.sigmoid", "1 / (1 + exp(-x)) (squeeze-and-excitation gates)")
_activation("hardsigmoid", "torch.nn.functional.hardsigmoid", "relu6(x + 3) / 6 (MobileNet v3)")
_activation("hardswish", "torch.nn.functional.hardswish", "x * relu6(x + 3) / 6 (MobileNet v3)")
_activation("silu", "torch.nn.functional.silu", "x * sigmoid(x) (swish)")
_activation("identity", "archlab.ops.activation.identity", "returns its input")


def identity(x):
    """The identity function (a named node that does nothing, e.g. an unused slot)."""
    return x
