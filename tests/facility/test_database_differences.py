"""What differs between the embedded sqlite database (PyDatabaseds) and the facility one
(cppTango DataBaseds on MariaDB) for what SMART stores, measured on both with the same calls.

docs/deployment.md ("What differs from the embedded sqlite database") quotes these results.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tango

from servers.CoordMapperDS.property_lines import CHUNK_CHARS, join_chunks, split_chunks
from tests.facility.production_db import (
    FACILITY_TIMINGS,
    ProductionDatabase,
    free_port,
    start_process,
    wait_for,
)

MARIADB_TEXT_LIMIT = 65535
"""The Tango schema keeps each property element in a MariaDB TEXT column (64 KiB - 1)."""


@pytest.fixture(scope="module")
def sqlite_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded database `smart up` starts, on its own for this comparison."""
    root = tmp_path_factory.mktemp("sqlite-db")
    began = time.monotonic()
    port = free_port()
    proc = start_process("PyDatabaseds", [str(Path(sys.executable).parent / "PyDatabaseds"), "--port", str(port),
                                          "--host", "127.0.0.1", "2"], root / "PyDatabaseds.log",
                         env={**os.environ, "PYTANGO_DATABASE_NAME": str(root / "tango.db")})

    def answers() -> bool:
        try:
            tango.Database("127.0.0.1", port).get_info()
            return True
        except tango.DevFailed:
            return False

    try:
        wait_for(answers, "PyDatabaseds", proc)
        FACILITY_TIMINGS["sqlite: PyDatabaseds answering"] = time.monotonic() - began
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()


def _database(host: str) -> tango.Database:
    db = tango.Database(*host.split(":"))
    db.set_timeout_millis(60_000)
    info = tango.DbDevInfo()
    info.name, info._class, info.server = "test/differences/1", "CoordMapperDS", "CoordMapperDS/differences"
    db.add_device(info)
    return db


def test_a_property_element_over_64_kib_is_cut_by_mariadb_and_kept_by_sqlite(
        sqlite_host: str, production_db: ProductionDatabase) -> None:
    big = "x" * 300_000
    stored = {}
    for name, host in (("sqlite", sqlite_host), ("mariadb", production_db.tango_host)):
        db = _database(host)
        db.put_device_property("test/differences/1", {"Big": [big]})
        stored[name] = len(db.get_device_property("test/differences/1", "Big")["Big"][0])
    assert stored == {"sqlite": 300_000, "mariadb": MARIADB_TEXT_LIMIT}  # silently, no error
    # CoordMapperDS stores its graph as lines of CHUNK_CHARS, far below the limit: a 200 kB
    # graph comes back whole from MariaDB
    assert CHUNK_CHARS < MARIADB_TEXT_LIMIT
    graph = json.dumps({"edges": [{"note": "y " * 100_000}]})
    db = _database(production_db.tango_host)
    db.put_device_property("test/differences/1", {"GraphState": split_chunks(graph)})
    back = join_chunks(list(db.get_device_property("test/differences/1", "GraphState")["GraphState"]))
    assert json.loads(back) == json.loads(graph)


def test_writing_many_property_elements_is_slower_on_mariadb(
        sqlite_host: str, production_db: ProductionDatabase) -> None:
    """DataBaseds writes one row per element plus its history: a CoordMapperDS graph of 13 chunks
    is quick on both; thousands of elements take longer than a client's default 3 s timeout."""
    for name, host in (("sqlite", sqlite_host), ("MariaDB", production_db.tango_host)):
        db = _database(host)
        for count, size in ((13, CHUNK_CHARS), (5000, 4)):
            began = time.monotonic()
            db.put_device_property("test/differences/1", {"P": ["z" * size] * count})
            FACILITY_TIMINGS[f"{name}: put_device_property, {count} elements of {size} chars"] = (
                time.monotonic() - began)
            assert list(db.get_device_property("test/differences/1", "P")["P"]) == ["z" * size] * count



def test_a_backslash_before_a_double_quote_is_dropped_by_mariadb_and_kept_by_sqlite(
        sqlite_host: str, production_db: ProductionDatabase) -> None:
    """What the MacroServer environment meets (sardana.yaml: ``environment_db: property``, one
    JSON text per variable): JSON writes a double quote in a string as ``\\"`` and a string's
    last backslash before its closing ``"``; DataBaseds on MariaDB gives back ``"`` for every
    ``\\"``, so the text no longer parses. Other backslashes come back as stored."""
    broken = [json.dumps({"key": json.dumps(["/data/a.tif", 3])}), json.dumps("C:\\")]
    kept = ["C:\\data\\x.tif", json.dumps("5 \u00b5m"), "a\\nb", "a\\\\b"]
    back = {}
    for name, host in (("sqlite", sqlite_host), ("mariadb", production_db.tango_host)):
        db = _database(host)
        db.put_device_property("test/differences/1", {"Escapes": [*broken, *kept]})
        back[name] = list(db.get_device_property("test/differences/1", "Escapes")["Escapes"])
    assert back["sqlite"] == [*broken, *kept]
    assert back["mariadb"] == [text.replace('\\"', '"') for text in broken] + kept
    for text in back["mariadb"][:len(broken)]:
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
