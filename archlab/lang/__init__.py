"""The description language: a Python builder and a YAML file format."""
from archlab.lang.builder import GraphBuilder, Ref
from archlab.lang.fileformat import dump, load, load_file, save

__all__ = ["GraphBuilder", "Ref", "dump", "load", "load_file", "save"]
