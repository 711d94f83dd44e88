"""Element-wise activations: shape-preserving, parameter-free."""
from __future__ import annotations

from archlab.ops.base import POINTWISE, MemoryRule, Op, numel, register_op


class Activation(Op):
    """An element-wise function; subclasses name the torch function to call."""

    torch_fn: str = ""  # "module.attr" resolved lazily, e.g. "torch.nn.functional.relu"
    saves: str = "input"  # what autograd saves for backward: "input" or "output" (checked on torch 2.14)

    def infer_shape(self, node, shapes):
        return shapes[0]

    def macs(self, node, shapes, out, convention):
        return numel(out) if convention == "full" and self.name != "identity" else 0

    def rf(self, node, shapes, out):
        return POINTWISE

    def memory(self, node, shapes, out):
        if self.name == "identity":
            return MemoryRule(alias=0, table_row=False)
        saved = {"saved_output": True} if self.saves == "output" else {"saved_inputs": (0,)}
        return MemoryRule(table_row=False, **saved)

    def emit(self, ctx, node, args, shapes):
        import importlib

        mod, _, attr = self.torch_fn.rpartition(".")
        return ctx.call_function(getattr(importlib.import_module(mod), attr), args)


def _activation(op_name: str, fn: str, doc: str, *, saves: str = "input") -> type[Op]:
    attrs = {"name": op_name, "torch_fn": fn, "doc": doc, "saves": saves}
    cls = type(op_name.title().replace("_", ""), (Activation,), attrs)
    return register_op(cls)


# ReLU and sigmoid save their result; relu6 (hardtanh), hardsigmoid, hardswish
# and silu save their input.
_activation("relu", "torch.nn.functional.relu", "max(x, 0)", saves="output")
_activation("relu6", "torch.nn.functional.relu6", "min(max(x, 0), 6) (MobileNet)")
_activation("sigmoid", "torch.sigmoid", "1 / (1 + exp(-x)) (squeeze-and-excitation gates)", saves="output")
_activation("hardsigmoid", "torch.nn.functional.hardsigmoid", "relu6(x + 3) / 6 (MobileNet v3)")
_activation("hardswish", "torch.nn.functional.hardswish", "x * relu6(x + 3) / 6 (MobileNet v3)")
_activation("silu", "torch.nn.functional.silu", "x * sigmoid(x) (swish)")
_activation("identity", "archlab.ops.activation.identity", "returns its input")


def identity(x):
    """The identity function (a named node that does nothing, e.g. an unused slot)."""
    return x
