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

import re
from pathlib import Path
from typing import Any

import yaml

from archlab.errors import ArchlabError, SerializationError, short
from archlab.graph import Graph
from archlab.ops import get_op

FORMAT = "archlab/1"
_RESERVED = ("name", "op", "in")


def _plain(v: Any, pair: bool = False) -> Any:
    """``v`` as written: tuples as lists, a square ``pair`` attribute as one number
    (a list of ints, ``reshape``'s ``[4, 4]``, stays a list)."""
    if isinstance(v, tuple):
        if pair and len(v) == 2 and v[0] == v[1]:
            return v[0]
        return [_plain(x) for x in v]
    return v


# libyaml's C emitter/parser when PyYAML has it (same output, ~4x faster); both are "safe".
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _flow(obj: Any) -> str:
    """One-line YAML for a mapping, list or scalar, as PyYAML writes it (the reference
    :func:`_emit` falls back to)."""
    if isinstance(obj, (dict, list)):
        return yaml.dump(obj, Dumper=_DUMPER, default_flow_style=True, width=10**9, sort_keys=False).strip()
    return _flow([obj])[1:-1]  # a bare scalar would get a document-end marker


# A string PyYAML writes plain (unquoted) in flow style: it starts with a letter or
# "_" and has no space, flow indicator (",[]{}"), ":", "#", quote or non-ASCII
# character. Of these, only YAML 1.1's bool and null words resolve to something
# other than a string (every number starts with a digit, sign or "."); those go to
# PyYAML, as does every other string, so the output is PyYAML's byte for byte.
_PLAIN_STR = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_RESERVED_WORDS = frozenset({"yes", "no", "true", "false", "on", "off", "null", "y", "n"})
_ONE_LINE = re.compile("[^\n\r\x85\u2028\u2029]*")  # no character PyYAML breaks a line at
_SCALARS: dict[tuple, str] = {}  # (type, value) -> text, for what went to PyYAML
_TEXTS: dict[str, str] = {}  # string -> text (node names recur from graph to graph)


class _Fallback(Exception):
    """What :func:`_emit` cannot write the way PyYAML would by itself."""


def _text(v: Any) -> str:
    """:func:`_scalar` of a string (raises :class:`_Fallback` for anything else)."""
    if type(v) is not str:
        raise _Fallback
    text = _TEXTS.get(v)
    if text is None:
        text = _scalar(v)
        if len(_TEXTS) < 65536:
            _TEXTS[v] = text
    return text


def _scalar(v: Any) -> str:
    t = type(v)
    if t is str:
        if _PLAIN_STR.fullmatch(v) and v.lower() not in _RESERVED_WORDS:
            return v
    elif t is int:
        return str(v)
    elif t is bool:
        return "true" if v else "false"
    elif v is None:
        return "null"
    if t is str and not _ONE_LINE.fullmatch(v):
        raise _Fallback  # PyYAML indents a quoted string's continuation lines by nesting depth
    key = (t, repr(v))  # repr: tells -0.0 from 0.0, 1 from 1.0 and True
    text = _SCALARS.get(key)
    if text is None:
        text = _flow(v)
        if len(_SCALARS) < 65536:
            _SCALARS[key] = text
    return text


def _emit(obj: Any) -> str:
    """:func:`_flow` of ``obj`` (a scalar, or lists and str-keyed dicts of scalars),
    without PyYAML's per-call cost: the same one-line flow YAML, byte for byte.
    Anything else (another key type, a key PyYAML would not write as a simple
    key, a list or dict that occurs twice and so would get a YAML anchor) goes
    to PyYAML whole."""
    try:
        return _emit_part(obj, set())
    except _Fallback:
        return _flow(obj)


def _emit_part(obj: Any, seen: set[int]) -> str:
    t = type(obj)
    if t is list or t is dict:
        if id(obj) in seen:
            raise _Fallback
        seen.add(id(obj))
        if t is list:
            return "[" + ", ".join([_emit_part(x, seen) for x in obj]) + "]"
        parts = []
        for k, v in obj.items():
            if type(k) is not str or len(k) >= 128 or not _PLAIN_STR.fullmatch(k) or k.lower() in _RESERVED_WORDS:
                raise _Fallback
            parts.append(f"{k}: {_emit_part(v, seen)}")
        return "{" + ", ".join(parts) + "}"
    if t in (str, int, bool, float) or obj is None:
        return _scalar(obj)
    raise _Fallback


_DEFAULTS: dict[str, tuple[Any, dict[str, Any]]] = {}  # op name -> (op definition, its defaults)


def _defaults(op_name: str) -> dict[str, Any]:
    op = get_op(op_name)
    hit = _DEFAULTS.get(op_name)
    if hit is None or hit[0] is not op:
        hit = _DEFAULTS[op_name] = (op, op.defaults())
    return hit[1]


_PAIRS: dict[str, tuple[Any, frozenset[str]]] = {}  # op name -> (op definition, its "pair" attributes)


def _pairs(op_name: str) -> frozenset[str]:
    op = get_op(op_name)
    hit = _PAIRS.get(op_name)
    if hit is None or hit[0] is not op:
        hit = _PAIRS[op_name] = (op, frozenset(a.name for a in op.attrs if a.kind == "pair"))
    return hit[1]


def _item(n, defaults: dict[str, Any]) -> dict[str, Any]:
    """A node as its line's mapping: attributes equal to their defaults left out."""
    item: dict[str, Any] = {"name": n.name, "op": n.op}
    if n.inputs:
        item["in"] = list(n.inputs)
    for k, v in n.attrs.items():
        if k in defaults and defaults[k] == v:
            continue
        item[k] = _plain(v, k in _pairs(n.op))
    return item


def _node_line(n, defaults: dict[str, Any]) -> str:
    """``_emit(_item(n, defaults))`` without building the mapping (raises :class:`_Fallback`)."""
    parts = ["name: " + _text(n.name), "op: " + _text(n.op)]
    if n.inputs:
        parts.append("in: [" + ", ".join([_text(x) for x in n.inputs]) + "]")
    seen: set[int] = set()
    keep = []  # the values written, alive until the end (their ids stay theirs)
    for k, v in n.attrs.items():
        if k in defaults and defaults[k] == v:
            continue
        if k in _RESERVED or _text(k) != k or len(k) >= 128:
            raise _Fallback  # a key that is not a plain simple key, or one that replaces name/op/in
        t = type(v)
        if t is int:
            parts.append(f"{k}: {v}")
        elif t is str:
            parts.append(f"{k}: {_text(v)}")
        else:
            v = _plain(v, k in _pairs(n.op))
            keep.append(v)
            parts.append(f"{k}: {_emit_part(v, seen)}")
    return "- {" + ", ".join(parts) + "}"


def dump(graph: Graph) -> str:
    """The description-file text of ``graph``."""
    lines = [f"format: {FORMAT}", f"name: {_emit(graph.name)}"]
    if graph.meta:
        lines.append(f"meta: {_emit(graph.meta)}")
    lines.append("nodes:")
    for n in graph.nodes:
        defaults = _defaults(n.op)
        try:
            lines.append(_node_line(n, defaults))
        except _Fallback:
            lines.append(f"- {_emit(_item(n, defaults))}")
    lines.append(f"outputs: {_emit(dict(graph.outputs))}")
    return "\n".join(lines) + "\n"


def load(text: str, *, source: str = "<string>", validate: bool = True) -> Graph:
    """Parse a description file's text into a graph (validated by default).

    Raises:
        SerializationError: malformed YAML or layout, naming the file and node.
        ArchlabError subclasses from validation.
    """
    source = str(source)[:200]
    try:
        doc = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as e:
        raise SerializationError(f"{source}: not valid YAML: {' '.join(str(e).split())[:300]}") from None
    except (ValueError, RecursionError, OverflowError) as e:  # an int of > 4,300 digits; nesting too deep
        raise SerializationError(f"{source}: cannot read a value: {' '.join(str(e).split())[:200]}") from None
    _check_size(doc, source)
    if not isinstance(doc, dict) or "nodes" not in doc:
        raise SerializationError(f"{source}: not an archlab description (expected keys format, name, nodes, outputs)")
    if doc.get("format", FORMAT) != FORMAT:
        raise SerializationError(f"{source}: unsupported format {short(doc.get('format'))}; this archlab reads {FORMAT}")
    name = doc.get("name", Path(source).stem)
    if not _is_name(name):
        raise SerializationError(f"{source}: 'name' must be a string, got {short(name)}")
    meta = doc.get("meta") or {}
    if not isinstance(meta, dict):
        raise SerializationError(f"{source}: 'meta' must be a mapping (key: value lines), got {short(meta)}")
    g = Graph(str(name), meta=meta)
    nodes = doc["nodes"]
    if not isinstance(nodes, list):
        raise SerializationError(f"{source}: 'nodes' must be a list, got {short(nodes)}")
    for i, item in enumerate(nodes):
        if not isinstance(item, dict) or "name" not in item or "op" not in item:
            raise SerializationError(
                f"{source}: node #{i} must be a mapping with at least 'name' and 'op', got {short(item)}")
        where = f"{source}: node #{i}"
        for key in ("name", "op"):
            if not _is_name(item[key]):
                raise SerializationError(f"{where}: '{key}' must be a string, got {short(item[key])}")
        bad = [k for k in item if not isinstance(k, str)]
        if bad:
            raise SerializationError(
                f"{where} ({short(item['name'])}): attribute names must be strings, got {short(bad[0])}")
        attrs = {k: v for k, v in item.items() if k not in _RESERVED}
        inputs = item.get("in")
        inputs = [] if inputs is None else [inputs] if _is_name(inputs) else inputs
        if not isinstance(inputs, list) or not all(_is_name(x) for x in inputs):
            raise SerializationError(
                f"{where} ({short(item['name'])}): 'in' must be a node name or a list of names, got {short(item['in'])}")
        try:
            g.add_node(str(item["name"]), str(item["op"]), [str(x) for x in inputs], **attrs)
        except ArchlabError as e:
            raise type(e)(f"{where}: {e}") from None
    outputs = doc.get("outputs") or {}
    if _is_name(outputs):
        outputs = {"out": outputs}
    if not isinstance(outputs, dict) or not all(_is_name(k) and _is_name(v) for k, v in outputs.items()):
        raise SerializationError(
            f"{source}: 'outputs' must be a node name or a mapping of output names to node names, got {short(outputs)}")
    for k, v in outputs.items():
        g.set_output(str(v), str(k))
    return g.validate() if validate else g


MAX_VALUES = 1_000_000
"""Values a description file may hold once its YAML aliases are expanded
(DenseNet-201 holds about 10,000): a "billion laughs" file of nested aliases is
refused at load, before anything walks or prints it."""


def _is_name(x: Any) -> bool:
    """A node / graph / output name: a string, or an int (``name: 1``), not a bool."""
    return type(x) is str or type(x) is int


def _check_size(doc: Any, source: str) -> None:
    """Refuse ``doc`` when, its YAML aliases expanded, it holds more than
    :data:`MAX_VALUES` values, nests over 100 deep or contains itself. Each
    distinct list or mapping is measured once (memoised by identity), so the
    check takes time in proportion to the file, not to its expansion."""
    sizes: dict[int, tuple[int, int]] = {}  # id -> (values expanded, depth)
    open_: set[int] = set()
    stack: list[tuple[Any, bool]] = [(doc, False)]
    while stack:
        x, done = stack.pop()
        if type(x) not in (dict, list):  # a scalar document (an empty file is None)
            continue
        kids = list(x.keys()) + list(x.values()) if type(x) is dict else x
        if done:
            count, depth = 1, 0
            for k in kids:
                c, d = sizes.get(id(k), (1, 0)) if type(k) in (dict, list) else (1, 0)
                count, depth = count + c, max(depth, d + 1)
            open_.discard(id(x))
            if count > MAX_VALUES or depth > 100:
                what = f"more than {MAX_VALUES:,} values" if count > MAX_VALUES else "values nested over 100 deep"
                raise SerializationError(
                    f"{source}: the file expands to {what} (YAML aliases?); write each node out, without nested aliases")
            sizes[id(x)] = (count, depth)
            continue
        if id(x) in sizes:
            continue
        if id(x) in open_:
            raise SerializationError(f"{source}: a YAML alias refers to a list or mapping that contains it")
        open_.add(id(x))
        stack.append((x, True))
        stack.extend((k, False) for k in kids if type(k) in (dict, list) and id(k) not in sizes)


def save(graph: Graph, path: str | Path) -> Path:
    """Write ``graph`` to ``path``; returns the path."""
    path = Path(path)
    path.write_text(dump(graph))
    return path


def load_file(path: str | Path, **kwargs: Any) -> Graph:
    """Read a description file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SerializationError(f"cannot read {path}: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SerializationError(
            f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start:,}); "
            "a description file is a UTF-8 YAML file") from None
    return load(text, source=str(path), **kwargs)
