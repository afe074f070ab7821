"""What a device declares, and hypothesis strategies for everything it accepts.

The fuzz is driven by the device's own interface, read over Tango (``command_list_query``,
``attribute_list_query``), so a command or setting added tomorrow is fuzzed without anyone
editing the campaign. JSON commands name their keys in ``doc_in`` (``'{"slot", "path",
"pixel_size_um"?}'``); those keys, with values chosen by what the key name suggests (a path,
a name, a number, a list) mixed with arbitrary JSON, make the arguments.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import tango
from hypothesis import strategies as st

from tests.reliability.corpus import HOSTILE_TEXT, SCRIPT_NAMES, Corpus

_QUOTED = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"')


@dataclass(frozen=True)
class CommandInfo:
    name: str
    in_type: tango.CmdArgType
    doc_in: str

    @property
    def takes_json(self) -> bool:
        return self.in_type == tango.CmdArgType.DevString and "{" in self.doc_in

    @property
    def keys(self) -> list[str]:
        """The keys ``doc_in`` names, in order, without the quoted enum values (``"affine"``)."""
        head = self.doc_in.split("}")[0]
        found: list[str] = []
        for match in _QUOTED.finditer(head):
            before = head[max(0, match.start() - 2):match.start()]
            after = head[match.end():match.end() + 1]
            if before == ": " or (before == "| " and after not in ("?", ":")):
                continue  # a value ("model": "similarity" | "affine"), not a key
            if match.group(1) not in found:
                found.append(match.group(1))
        return found

    @property
    def choices(self) -> list[str]:
        """Quoted words in ``doc_in`` that are values, not keys (model names etc.)."""
        words = _QUOTED.findall(self.doc_in) + re.findall(r"(\w+)\s*\|\s*\"?(\w+)", self.doc_in)
        flat = [w for item in words for w in ((item,) if isinstance(item, str) else item)]
        return sorted({w for w in flat if w not in self.keys})


@dataclass(frozen=True)
class AttributeInfo:
    name: str
    data_type: tango.CmdArgType
    data_format: tango.AttrDataFormat
    max_dim_x: int
    min_value: str
    max_value: str


@dataclass
class DeviceInterface:
    name: str
    commands: list[CommandInfo] = field(default_factory=list)
    writable: list[AttributeInfo] = field(default_factory=list)


def describe(proxy: tango.DeviceProxy) -> DeviceInterface:
    """The commands and writable attributes ``proxy`` declares."""
    interface = DeviceInterface(proxy.dev_name())
    for info in proxy.command_list_query():
        interface.commands.append(CommandInfo(info.cmd_name, info.in_type, info.in_type_desc or ""))
    for attr in proxy.attribute_list_query():
        if attr.writable in (tango.AttrWriteType.WRITE, tango.AttrWriteType.READ_WRITE):
            interface.writable.append(AttributeInfo(attr.name, attr.data_type, attr.data_format,
                                                    attr.max_dim_x, attr.min_value, attr.max_value))
    return interface


# --------------------------------------------------------------------------- strategies
def names() -> st.SearchStrategy[str]:
    """Names as users type them: plain, in several scripts, hostile, or anything."""
    return st.one_of(st.sampled_from(["sem", "camera", "stage", "probe", "probe_a", "a", "A_1"]),
                     st.sampled_from(list(SCRIPT_NAMES.values())), st.sampled_from(HOSTILE_TEXT),
                     st.text(max_size=40))


def numbers() -> st.SearchStrategy[Any]:
    return st.one_of(st.integers(-2**63, 2**63), st.floats(allow_nan=False, allow_infinity=False),
                     st.sampled_from([0, -1, 1, 1e300, -1e300, 5e-324, 2**31, 3]))


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), numbers(), st.text(max_size=20))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                        max_leaves=20)


def matrices() -> st.SearchStrategy[Any]:
    row = st.lists(numbers(), min_size=0, max_size=4)
    return st.one_of(st.lists(row, min_size=0, max_size=4), st.just([[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
                     st.just([[0, 0, 0], [0, 0, 0], [0, 0, 1]]))


def value_for(key: str, corpus: Corpus, devices: list[str], choices: list[str]) -> st.SearchStrategy[Any]:
    """A value for JSON ``key``: what the name suggests most of the time, anything sometimes."""
    lowered = key.lower()
    if lowered in ("path", "file"):
        likely = st.one_of(st.sampled_from([str(corpus.valid), *corpus.paths()]), st.text(max_size=30))
    elif lowered in ("device", "attribute"):
        likely = st.one_of(st.sampled_from(devices + [f"{d}/Image" for d in devices]), names())
    elif lowered in ("slot", "reference", "target", "from", "to", "name", "frame", "model", "representation",
                     "method", "from_unit", "to_unit"):
        likely = st.one_of(names(), st.sampled_from(choices or ["x"]))
    elif lowered in ("matrix", "covariance"):
        likely = matrices()
    elif lowered in ("pairs", "steps", "points"):
        likely = st.lists(st.lists(numbers(), min_size=2, max_size=4), max_size=8)
    elif "roi" in lowered or "position" in lowered or "range" in lowered:
        likely = st.lists(numbers(), max_size=5)
    elif lowered in ("reflection", "reject_outliers", "invert"):
        likely = st.booleans()
    else:
        likely = numbers()
    return st.one_of(likely, likely, likely, json_values())


def command_arguments(command: CommandInfo, corpus: Corpus, devices: list[str]) -> st.SearchStrategy[Any]:
    """Arguments for one command, by its declared input type."""
    kind = command.in_type
    if kind == tango.CmdArgType.DevVoid:
        return st.none()
    if command.takes_json:
        keys = command.keys
        objects = st.fixed_dictionaries(
            {}, optional={k: value_for(k, corpus, devices, command.choices) for k in keys}
        ).flatmap(lambda base: st.dictionaries(st.sampled_from(["bogus", "Path", "slot "]), json_values(),
                                               max_size=1).map(lambda extra: {**base, **extra})
                  if keys else st.just(base))
        raw = st.one_of(st.sampled_from(["", "{", "[]", "null", '{"a": NaN}', "{}" + " " * 10,
                                         '{"x": 1e999}', "\x00"]), st.text(max_size=60))
        # ASCII-escaped JSON and raw UTF-8 JSON: both are what clients send
        return st.one_of(objects.map(lambda o: json.dumps(o)), objects.map(lambda o: json.dumps(o, ensure_ascii=False)),
                         raw)
    if kind == tango.CmdArgType.DevString:
        if "path" in command.doc_in.lower():
            # the server may write there: absolute paths only inside the corpus (or harmless),
            # anything else relative, landing in the fuzz servers' own folder
            relative = st.text(max_size=60).map(lambda t: t.replace("/", "_"))
            return st.one_of(st.sampled_from(corpus.paths()), relative,
                             relative.map(lambda t: str(corpus.folder / "out" / t)),
                             st.sampled_from(["/nonexistent/dir/out.tif", "/proc/self/x.tif", "relative.tif",
                                              "/tmp", "/", str(corpus.folder / "out" / "a.tif"),
                                              str(corpus.folder / "out" / "a.csv")]))
        return st.one_of(names(), st.text(max_size=60))
    if kind in (tango.CmdArgType.DevDouble, tango.CmdArgType.DevFloat):
        return st.floats()
    if kind in (tango.CmdArgType.DevBoolean,):
        return st.booleans()
    if kind in (tango.CmdArgType.DevLong, tango.CmdArgType.DevLong64, tango.CmdArgType.DevShort,
                tango.CmdArgType.DevULong, tango.CmdArgType.DevULong64, tango.CmdArgType.DevUShort):
        return st.integers(-2**31, 2**31 - 1)
    return st.one_of(st.none(), st.text(max_size=20), st.lists(st.floats(), max_size=4))


def attribute_values(attr: AttributeInfo) -> st.SearchStrategy[Any]:
    """Values to write to one attribute, by its declared type and format."""
    kind = attr.data_type
    if kind in (tango.CmdArgType.DevDouble, tango.CmdArgType.DevFloat):
        scalar: st.SearchStrategy[Any] = st.one_of(
            st.floats(), st.sampled_from([0.0, -1.0, 1e300, -1e300, 1e-300, 1e6, 0.5, 3.0, 255.0]))
    elif kind == tango.CmdArgType.DevBoolean:
        scalar = st.booleans()
    elif kind == tango.CmdArgType.DevString:
        scalar = st.one_of(names(), st.text(max_size=40))
    elif kind == tango.CmdArgType.DevEnum:
        scalar = st.integers(-5, 40)
    else:
        scalar = st.one_of(st.integers(-2**31, 2**31 - 1), st.sampled_from([0, -1, 1, 2, 3, 4, 9, 255, 256, 10**6]))
    if attr.data_format == tango.AttrDataFormat.SPECTRUM:
        return st.lists(scalar, min_size=0, max_size=max(2, min(attr.max_dim_x + 2, 8)))
    return scalar
