"""One device server on a Tango file database: no database server, loopback only.

Device tests and benchmarks run a server this way when the whole stack (`smart up`) would be
more than they need: the devices and their properties go into a file database, the server
listens on a free 127.0.0.1 port, clients reach it by ``#dbase=no`` names, and the process is
stopped by its PID when the block ends (:func:`stop_process`, which tests use for the servers
they start themselves).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import tango

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def write_file_database(db_file: Path, server: str, devices: dict[str, tuple[str, dict[str, Any]]]) -> None:
    """A file database declaring ``devices`` {name: (class, properties)} for ``server``
    ("Executable/instance"); property values may be scalars or lists."""
    by_class: dict[str, list[str]] = {}
    for dev, (cls, _props) in devices.items():
        by_class.setdefault(cls, []).append(dev)
    db_file.write_text("".join(f"{server}/DEVICE/{cls}: {', '.join(devs)}\n" for cls, devs in by_class.items()))
    db = tango.Database(str(db_file))
    for dev, (_cls, props) in devices.items():
        if props:
            db.put_device_property(dev, {k: [str(v) for v in (v if isinstance(v, (list, tuple)) else [v])]
                                         for k, v in props.items()})


@contextmanager
def run_on_file_database(command: Sequence[str], instance: str, db_file: Path, devices: Sequence[str],
                         log_path: Path, start_timeout_s: float = 60.0) -> Iterator[dict[str, str]]:
    """Run ``command instance`` on ``db_file`` until every device answers; yields {device: TRL}.

    Raises RuntimeError with the tail of the server's log when it exits or does not answer in
    time. The server is stopped by its PID (SIGTERM, then SIGKILL after 10 s) on leaving."""
    port = free_port()
    log = open(log_path, "ab")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([*command, instance, f"-file={db_file}", "-ORBendPoint", f"giop:tcp:{LOOPBACK}:{port}"],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    trls = {dev: f"tango://{LOOPBACK}:{port}/{dev}#dbase=no" for dev in devices}
    try:
        deadline = time.monotonic() + start_timeout_s
        for trl in trls.values():
            while True:
                try:
                    tango.DeviceProxy(trl).state()
                    break
                except tango.DevFailed:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.flush()
                        tail = Path(log_path).read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"{' '.join(command)} {instance} did not start:\n{tail}") from None
                    time.sleep(0.1)
        yield trls
    finally:
        stop_process(proc)
        log.close()


def stop_process(process: subprocess.Popen | int, timeout_s: float = 10.0) -> None:
    """Stop one process by its PID: SIGTERM, SIGKILL if it is still there after ``timeout_s``;
    waits for it (and reaps our own children) either way. Gone already is fine."""
    try:
        target = process if isinstance(process, subprocess.Popen) else psutil.Process(process)
        target.terminate()
        try:
            target.wait(timeout_s)
        except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
            target.kill()
            target.wait(timeout_s)
    except psutil.NoSuchProcess:
        pass
