"""The op registry. Importing this package registers every built-in op."""
from archlab.ops.base import Attr, Op, OpName, Shape, all_ops, get_op, register_op
from archlab.ops import (  # noqa: F401  (registration)
    activation, attention, constant, conv, index, merge, norm, pool, resample, reshape, special, tensor_math,
)

__all__ = ["Attr", "Op", "OpName", "Shape", "all_ops", "get_op", "register_op"]
