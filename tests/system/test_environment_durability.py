"""The MacroServer environment of the project's Sardana configuration outlives a SIGKILL in the
middle of a write.

The night kills the MacroServer mid-scan (``clients/night.py``), and a real one can die the same
way; its environment holds ScanDir and ScanFile, without which ``smart_run_queue`` refuses to run
(its scans would not be stored). Kept as a shelve on a Python with only dbm.dumb, a kill while
Sardana syncs the shelve (the index renamed, not yet written anew) lost the whole environment:
11 of 15 kills with the writer below. The test runs Sardana's own environment manager, as the
MacroServer does, on the ``environment_db`` of the stack's rendered configuration, kills it at
random moments while it writes, and reads the environment back each time.

System tier: the environment lives in the stack's Tango database.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import tango
import yaml

from clients.launcher import Stack, clear_environments, environments_in_database

WRITER = """
import sys
from sardana.macroserver.macroserver import MacroServer
server = MacroServer(sys.argv[1])
server.set_environment_db(sys.argv[2])
env = server.environment_manager
env.setEnv("ScanDir", "/data/scans")
print("written", flush=True)
scan_id = 0
while True:  # what a night does to the environment: ScanID, ScanHistory, SmartScanProgress ...
    scan_id += 1
    env.setEnv("ScanID", scan_id)
"""

KILLS = 10


def _environment_db(stack: Stack) -> tuple[str, str]:
    """The MacroServer's name and ``environment_db`` as `smart up` gave them to sardana-config."""
    servers = yaml.safe_load((stack.run_dir / "sardana.yaml").read_text())["macro_servers"]
    server = next(iter(servers.values()))
    return "smart_killed_writer", str(server["environment_db"])


def _scan_dir_after_restart(name: str, environment_db: str, env: dict[str, str]) -> object:
    reader = ("import sys\nfrom sardana.macroserver.macroserver import MacroServer\n"
              "server = MacroServer(sys.argv[1]); server.set_environment_db(sys.argv[2])\n"
              "print(repr(server.environment_manager.getEnv('ScanDir')))")
    done = subprocess.run([sys.executable, "-c", reader, name, environment_db], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    return done.stdout.strip().splitlines()[-1] if done.returncode == 0 else f"lost: {done.stderr[-300:]}"


def test_the_environment_survives_a_sigkill_while_it_is_written(stack: Stack) -> None:
    name, environment_db = _environment_db(stack)
    assert environment_db == "property", "the stack's environment is no longer in the Tango database"
    env = {**os.environ, "TANGO_HOST": stack.tango_host}
    database = tango.Database(*stack.tango_host.split(":"))
    rng = random.Random(7)
    seen = []
    try:
        for _ in range(KILLS):
            writer = subprocess.Popen([sys.executable, "-c", WRITER, name, environment_db], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                assert writer.stdout.readline().strip() == "written"
                writer.stdout.close()
                time.sleep(rng.uniform(0.1, 0.4))  # a random moment of its writing
            finally:
                writer.kill()
                writer.wait(timeout=30)
            seen.append(_scan_dir_after_restart(name, environment_db, env))
    finally:
        clear_environments(database, [name])
    assert seen == ["'/data/scans'"] * KILLS


def test_a_new_stack_clears_the_environment_it_keeps_in_the_database(stack: Stack) -> None:
    """What deleting the shelve file did: a stack in a facility's database (which outlives it)
    does not hand the next one its SmartScanProgress. Other objects' properties stay."""
    database = tango.Database(*stack.tango_host.split(":"))
    config = yaml.safe_dump({"macro_servers": {
        "MacroServer_a": {"tango_alias": "smart_stale_ms", "environment_db": "property"},
        "MacroServer_b": {"tango_device": "x/ms/1", "environment_db": "property:smart_stale_named"},
        "MacroServer_c": {"tango_alias": "smart_shelve_ms", "environment_db": "/tmp/ms.env"}}})
    assert environments_in_database(config) == ["smart_stale_ms", "smart_stale_named"]
    for name in ("smart_stale_ms", "smart_stale_named", "smart_bystander"):
        database.put_property(name, {"SmartScanProgress": ["json", '{"done": [1, 2]}'], "ScanID": ["json", "3"]})
    try:
        clear_environments(database, environments_in_database(config))
        for name in ("smart_stale_ms", "smart_stale_named"):
            assert list(database.get_object_property_list(name, "*").value_string) == []
        assert sorted(database.get_object_property_list("smart_bystander", "*").value_string) == [
            "ScanID", "SmartScanProgress"]
    finally:
        clear_environments(database, ["smart_bystander"])
