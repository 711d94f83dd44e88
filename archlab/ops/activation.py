"""Element-wise activations: shape-preserving, parameter-free.

Every activation: output shape = input shape (any rank); MACs 0 under
``torchvision`` and ``fvcore`` (neither counts them), 1 per element under
``full`` (``identity``: 0); receptive field :data:`POINTWISE`; memory: a new
tensor in the input's layout, and autograd saves the input or the output as
stated per op (checked with ``saved_tensors_hooks`` on torch 2.14).
"""
from __future__ import annotations

from archlab.errors import ShapeError
from archlab.ops.base import POINTWISE, Attr, MemoryRule, Op, numel, register_op


class Activation(Op):
    """An element-wise function; subclasses name the torch function to call,
    which gets the node's attributes as keyword arguments."""

    torch_fn: str = ""  # "module.attr" resolved lazily, e.g. "torch.nn.functional.relu"
    saves: str = "input"  # what autograd saves for backward: "input" or "output" (checked on torch 2.14)
    choices: dict = {}  # str attribute -> its allowed values

    def infer_shape(self, node, shapes):
        for k, allowed in self.choices.items():
            if node.attrs[k] not in allowed:
                raise self.shape_error(ShapeError, node, shapes, f"{k}={node.attrs[k]!r} is not one of "
                                       f"{', '.join(map(repr, allowed))}")
        if self.name == "hardtanh" and node.attrs["min_val"] > node.attrs["max_val"]:
            raise self.shape_error(ShapeError, node, shapes, f"min_val={node.attrs['min_val']} is above "
                                   f"max_val={node.attrs['max_val']}")
        return shapes[0]

    def macs(self, node, shapes, out, convention):
        return numel(out) if convention == "full" and self.name != "identity" else 0

    def rf(self, node, shapes, out):
        return POINTWISE

    def memory(self, node, shapes, out):
        if self.name == "identity":
            return MemoryRule(alias=0, table_row=False)
        saved = {"saved_output": True} if self.saves == "output" else {"saved_inputs": (0,)}
        return MemoryRule(table_row=False, layout="like_input", **saved)

    def emit(self, ctx, node, args, shapes):
        import importlib

        mod, _, attr = self.torch_fn.rpartition(".")
        return ctx.call_function(getattr(importlib.import_module(mod), attr), args, dict(node.attrs))


def _activation(op_name: str, fn: str, doc: str, *, saves: str = "input", attrs: tuple = (),
                choices: dict | None = None) -> type[Op]:
    body = {"name": op_name, "torch_fn": fn, "doc": doc, "saves": saves, "attrs": attrs, "choices": choices or {}}
    cls = type(op_name.title().replace("_", ""), (Activation,), body)
    return register_op(cls)


# ReLU, sigmoid and tanh save their result; the others save their input.
_activation("relu", "torch.nn.functional.relu", "max(x, 0)", saves="output")
_activation("relu6", "torch.nn.functional.relu6", "min(max(x, 0), 6) (MobileNet)")
_activation("sigmoid", "torch.sigmoid", "1 / (1 + exp(-x)) (squeeze-and-excitation gates)", saves="output")
_activation("hardsigmoid", "torch.nn.functional.hardsigmoid", "relu6(x + 3) / 6 (MobileNet v3)")
_activation("hardswish", "torch.nn.functional.hardswish", "x * relu6(x + 3) / 6 (MobileNet v3)")
_activation("silu", "torch.nn.functional.silu", "x * sigmoid(x) (swish)")
_activation("identity", "archlab.ops.activation.identity", "returns its input")
_activation("gelu", "torch.nn.functional.gelu", "x * Phi(x); approximate='tanh' for the tanh form (ViT, ConvNeXt)",
            attrs=(Attr("approximate", "str", "none"),), choices={"approximate": ("none", "tanh")})
_activation("leaky_relu", "torch.nn.functional.leaky_relu", "max(x, 0) + negative_slope * min(x, 0)",
            attrs=(Attr("negative_slope", "float", 0.01),))
_activation("mish", "torch.nn.functional.mish", "x * tanh(softplus(x))")
_activation("tanh", "torch.tanh", "hyperbolic tangent", saves="output")
_activation("hardtanh", "torch.nn.functional.hardtanh", "clamp(x, min_val, max_val)",
            attrs=(Attr("min_val", "float", -1.0), Attr("max_val", "float", 1.0)))
_activation("elu", "torch.nn.functional.elu", "x if x > 0 else alpha * (exp(x) - 1)", attrs=(Attr("alpha", "float", 1.0),))
_activation("softplus", "torch.nn.functional.softplus", "log(1 + exp(beta * x)) / beta (linear above threshold)",
            attrs=(Attr("beta", "float", 1.0), Attr("threshold", "float", 20.0)))

_activation("exp", "torch.exp", "e ** x (Swin v2's logit scale)", saves="output")
_activation("clamp", "torch.clamp", "min(max(x, min), max); a bound of None is absent (Swin v2's logit scale)",
            attrs=(Attr("min", "float", None), Attr("max", "float", None)))


def identity(x):
    """The identity function (a named node that does nothing, e.g. an unused slot)."""
    return x
