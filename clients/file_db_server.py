"""One device server on a Tango file database: no database server, loopback only.

Device tests and benchmarks run a server this way when the whole stack (`smart up`) would be
more than they need: the devices and their properties go into a file database, the server
listens on a free 127.0.0.1 port, clients reach it by ``#dbase=no`` names, and the process is
stopped by its PID when the block ends (:func:`stop_process`, which tests use for the servers
they start themselves). :func:`wait_answering` is how they wait for any device to come up.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import tango

from macros.smart_calls import proxy

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


def wait_answering(trl: str, timeout_s: float = 30.0, server: subprocess.Popen | None = None,
                   log: Path | None = None) -> tango.DeviceProxy:
    """A proxy (10 s client timeout) once the device ``trl`` answers State.

    Raises RuntimeError when ``timeout_s`` passes or, earlier, when ``server`` (the process
    serving it) exits; the message ends with the tail of the server's ``log``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            device = proxy(trl, 10_000)
            device.state()
            return device
        except tango.DevFailed:
            exited = server is not None and server.poll() is not None
            if exited or time.monotonic() > deadline:
                tail = f": {log.read_text(errors='replace')[-2000:]}" if log is not None and log.exists() else ""
                problem = f"the server of {trl} exited" if exited else f"{trl} did not answer within {timeout_s:.0f} s"
                raise RuntimeError(f"{problem}{tail}") from None
            time.sleep(0.1)


@contextmanager
def run_on_file_database(command: Sequence[str], server: str, devices: dict[str, tuple[str, dict[str, Any]]],
                         folder: Path | None = None, start_timeout_s: float = 60.0,
                         cwd: Path | None = None) -> Iterator[dict[str, str]]:
    """Run ``command instance`` serving ``devices`` ({name: (class, properties)}) as ``server``
    ("Executable/instance") until every device answers; yields {device: TRL}.

    The file database and the server's log live in ``folder`` (default: a new temporary
    folder); a database already there is used as it is, so a second run in the same folder
    sees what the first one memorized. The server runs in ``cwd`` (default: the project), which
    is where a relative path given to one of its commands lands.
    Raises RuntimeError with the tail of the log when the server exits or does not answer in
    time. The server is stopped by its PID (SIGTERM, then SIGKILL after 10 s) on leaving,
    also when it failed to start."""
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="smart-file-db-"))
    folder.mkdir(parents=True, exist_ok=True)
    name = server.replace("/", "_")
    db_file, log_path = folder / f"{name}.db", folder / f"{name}.log"
    if not db_file.exists():
        write_file_database(db_file, server, devices)
    port = free_port()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([*command, server.split("/")[1], f"-file={db_file}",
                                 "-ORBendPoint", f"giop:tcp:{LOOPBACK}:{port}"],
                                cwd=cwd or REPO, stdout=log, stderr=subprocess.STDOUT)
    trls = {dev: f"tango://{LOOPBACK}:{port}/{dev}#dbase=no" for dev in devices}
    try:
        deadline = time.monotonic() + start_timeout_s
        try:
            for trl in trls.values():
                wait_answering(trl, max(deadline - time.monotonic(), 0.0), proc, log_path)
        except RuntimeError as exc:
            raise RuntimeError(f"{' '.join(command)} {server} did not start: {exc}") from None
        yield trls
    finally:
        stop_process(proc)


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
