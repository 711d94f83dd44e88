"""The text side of the description language: a YAML file, one node a line.

::

    format: archlab/1
    name: resnet18
    nodes:
    - {name: x, op: input, shape: [3, 224, 224]}
    - {name: conv1, op: conv2d, in: [x], out_channels: 64, kernel_size: 7, stride: 2, padding: 3, bias: false}
    ...
    outputs: {out: fc}

Attributes equal to their defaults are omitted and a square pair is written as
one number; loading fills them back through the op definitions, so
``load(dump(g)) == g`` (names, ops, attributes, order, outputs and meta).
Files are read with PyYAML's safe loader (libyaml's when available).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from archlab.errors import ArchlabError, SerializationError
from archlab.graph import Graph
from archlab.ops import get_op

FORMAT = "archlab/1"
_RESERVED = ("name", "op", "in")


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        if len(v) == 2 and v[0] == v[1]:
            return v[0]
        return [_plain(x) for x in v]
    return v


# libyaml's C emitter/parser when PyYAML has it (same output, ~4x faster); both are "safe".
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _flow(obj: Any) -> str:
    """One-line YAML for a mapping, list or scalar."""
    if isinstance(obj, (dict, list)):
        return yaml.dump(obj, Dumper=_DUMPER, default_flow_style=True, width=10**9, sort_keys=False).strip()
    return _flow([obj])[1:-1]  # a bare scalar would get a document-end marker


def dump(graph: Graph) -> str:
    """The description-file text of ``graph``."""
    lines = [f"format: {FORMAT}", f"name: {_flow(graph.name)}"]
    if graph.meta:
        lines.append(f"meta: {_flow(graph.meta)}")
    lines.append("nodes:")
    for n in graph.nodes:
        defaults = get_op(n.op).defaults()
        item: dict[str, Any] = {"name": n.name, "op": n.op}
        if n.inputs:
            item["in"] = list(n.inputs)
        for k, v in n.attrs.items():
            if k in defaults and defaults[k] == v:
                continue
            item[k] = _plain(v)
        lines.append(f"- {_flow(item)}")
    lines.append(f"outputs: {_flow(dict(graph.outputs))}")
    return "\n".join(lines) + "\n"


def load(text: str, *, source: str = "<string>", validate: bool = True) -> Graph:
    """Parse a description file's text into a graph (validated by default).

    Raises:
        SerializationError: malformed YAML or layout, naming the file and node.
        ArchlabError subclasses from validation.
    """
    try:
        doc = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as e:
        raise SerializationError(f"{source}: not valid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(doc, dict) or "nodes" not in doc:
        raise SerializationError(f"{source}: not an archlab description (expected keys format, name, nodes, outputs)")
    if doc.get("format", FORMAT) != FORMAT:
        raise SerializationError(f"{source}: unsupported format {doc.get('format')!r}; this archlab reads {FORMAT}")
    g = Graph(str(doc.get("name", Path(source).stem)), meta=doc.get("meta") or {})
    nodes = doc["nodes"]
    if not isinstance(nodes, list):
        raise SerializationError(f"{source}: 'nodes' must be a list")
    for i, item in enumerate(nodes):
        if not isinstance(item, dict) or "name" not in item or "op" not in item:
            raise SerializationError(f"{source}: node #{i} must be a mapping with at least 'name' and 'op', got {item!r}")
        attrs = {k: v for k, v in item.items() if k not in _RESERVED}
        inputs = item.get("in") or []
        if isinstance(inputs, str):
            inputs = [inputs]
        try:
            g.add_node(str(item["name"]), str(item["op"]), [str(x) for x in inputs], **attrs)
        except ArchlabError as e:
            raise type(e)(f"{source}: node #{i}: {e}") from None
    outputs = doc.get("outputs") or {}
    if isinstance(outputs, str):
        outputs = {"out": outputs}
    for k, v in outputs.items():
        g.set_output(str(v), str(k))
    return g.validate() if validate else g


def save(graph: Graph, path: str | Path) -> Path:
    """Write ``graph`` to ``path``; returns the path."""
    path = Path(path)
    path.write_text(dump(graph))
    return path


def load_file(path: str | Path, **kwargs: Any) -> Graph:
    """Read a description file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SerializationError(f"cannot read {path}: {e.strerror}") from None
    return load(text, source=str(path), **kwargs)
