"""The stack's Tango configuration as a dsconfig JSON file (MAX IV's `dsconfig`, `json2tango`).

Facilities review and apply server configuration as dsconfig JSON: ``servers -> Executable ->
instance -> Class -> device -> {"properties": {name: [str, ...]}}``. The launcher YAML
(simulation/launch/smart.yaml) stays the friendly source; this module turns it, or what a
running Tango database holds for our servers, into that format, checks a file against
dsconfig's own JSON schema, and applies it with dsconfig's own planner (``configure``), so
the database calls are exactly those ``json2tango --write`` makes.

dsconfig 1.9 works with pytango 10 against both databases the project meets: the embedded
``PyDatabaseds`` (pytango-db, sqlite) answers the ``DbMySqlSelect`` queries that dsconfig's
dump and planner send, as does the MariaDB-backed cppTango ``DataBaseds``. So a file written
by ``smart config export`` can be applied with ``json2tango -w FILE`` and the other way round.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from clients.launcher import ServerSpec, StackConfig, _as_property

FORMAT_VERSION = 2
"""dsconfig's schema (schema2.json) accepts only ``"_version": 2``."""


class DsconfigError(ValueError):
    """A dsconfig file that cannot be used; the message names the file, the place and the fix."""


def from_stack_config(config: StackConfig, source: str) -> dict[str, Any]:
    """The servers of the launcher YAML (properties expanded) as dsconfig JSON."""
    return _document(config.servers, source)


def from_database(db: Any, servers: Iterable[str], source: str) -> dict[str, Any]:
    """What the Tango database holds for ``servers`` ("Executable/instance"), as dsconfig JSON.

    This is ``tango2json server:A/x server:B/y`` (dsconfig's own dump): every device of each
    server with its properties and alias, without the dserver device and Tango's protected
    properties. A server the database does not know is refused: exporting a file without it
    would silently lose it."""
    from dsconfig.dump import get_db_data

    names = list(servers)
    dumped = get_db_data(db, [f"server:{name}" for name in names], include_tango_host=False)
    found = {f"{exe}/{inst}".lower() for exe, insts in dumped.get("servers", {}).items() for inst in insts}
    missing = [name for name in names if name.lower() not in found]
    if missing:
        raise DsconfigError(f"server(s) {', '.join(missing)} not in the Tango database at {source}; "
                            "start the stack (`smart up`) or use export --from-yaml")
    return {**_metadata(source), "servers": dumped["servers"]}


def _document(specs: Iterable[ServerSpec], source: str) -> dict[str, Any]:
    servers: dict[str, Any] = {}
    for spec in specs:
        instance = servers.setdefault(spec.executable, {}).setdefault(spec.instance, {})
        for device, (class_name, props) in spec.devices.items():
            entry: dict[str, Any] = {}
            if props:
                entry["properties"] = {k: _as_property(v) for k, v in sorted(props.items())}
            instance.setdefault(class_name, {})[device] = entry
    return {**_metadata(source), "servers": servers}


def _metadata(source: str) -> dict[str, Any]:
    """dsconfig's header keys (its schema allows these; json2tango ignores keys starting with _)."""
    return {"_title": "SMART on Tango servers", "_source": source, "_version": FORMAT_VERSION,
            "_date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def write(data: dict[str, Any], path: Path) -> Path:
    """Write ``data`` as the indented, key-sorted JSON that ``tango2json`` prints."""
    validate(data, str(path))
    path = Path(path)
    try:
        path.write_text(json.dumps(data, indent=4, sort_keys=True, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise DsconfigError(f"cannot write {path}: {exc.strerror}; choose a writable path") from None
    return path


def load(path: Path) -> dict[str, Any]:
    """Read and check a dsconfig file; DsconfigError says what is wrong and where."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise DsconfigError(f"cannot read dsconfig file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DsconfigError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; "
                            "fix the file (json2tango needs strict JSON: no comments, no trailing commas)") from None
    validate(data, str(path))
    return data


def validate(data: Any, where: str) -> None:
    """Check ``data`` against dsconfig's own schema (``dsconfig/schema/schema2.json``)."""
    import jsonschema
    from dsconfig.formatting import SCHEMA_FILENAME

    schema = json.loads(Path(SCHEMA_FILENAME).read_text())
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        place = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise DsconfigError(f"{where} does not follow the dsconfig format at {place}: {exc.message}; "
                            "expected servers -> Executable -> instance -> Class -> domain/family/member -> "
                            '{"properties": {"Name": ["value", ...]}}') from None
    if not data.get("servers"):
        raise DsconfigError(f"{where} names no servers: nothing to apply")


def server_specs(data: dict[str, Any]) -> list[ServerSpec]:
    """The servers of a dsconfig document, in the file's order, as the launcher starts them."""
    specs = []
    for executable, instances in data["servers"].items():
        for instance, classes in instances.items():
            devices = {device: (class_name, dict((entry or {}).get("properties", {})))
                       for class_name, devs in classes.items() for device, entry in devs.items()}
            specs.append(ServerSpec(executable, instance, devices))
    return specs


def apply(db: Any, data: dict[str, Any], write: bool = True, update: bool = False) -> list[str]:
    """Bring the database to what ``data`` describes: ``json2tango [--write] [--update] FILE``.

    dsconfig's planner (``apply_config``) compares the file with the database and lists the
    calls: add servers, devices and properties, change values, and unless ``update`` remove
    the devices and properties of those servers that the file no longer has; with ``write``
    it makes them. Returns one line per call, for the user to review."""
    from dsconfig.json2tango import apply_config, prepare_config

    config = prepare_config(data)
    try:
        _config, _original, calls, *_ = apply_config(config, db, write=write, update=update, sleep=0)
    except RuntimeError as exc:  # dsconfig signals "nothing to configure" with its exit code
        raise DsconfigError(f"dsconfig refused the configuration (code {exc.args[0]})") from None
    return [_describe(method, args) for method, args, _kwargs in calls]


def _describe(method: str, args: tuple) -> str:
    """One reviewable line per database call (DbDevInfo is shown by its fields)."""
    shown = []
    for arg in args:
        if hasattr(arg, "name") and hasattr(arg, "server"):
            shown.append(f"{arg.name} ({arg._class} in {arg.server})")
        else:
            shown.append(json.dumps(arg, default=str, sort_keys=True) if isinstance(arg, dict | list) else str(arg))
    return f"{method} {' '.join(shown)}"
