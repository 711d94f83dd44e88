"""The archlab IR: nodes, graphs, shape inference, validation and text form."""
from archlab.graph.graph import Graph
from archlab.graph.node import Node

__all__ = ["Graph", "Node"]
