"""Several clients at once on one device, and several devices in one server, for every server class.

docs/interface.md, "Several clients at once": commands of one device run one at a time, a
second client's command waits its turn (instead of being refused), and State, Status and
the results stay readable while a command runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tango
import tifffile
from PIL import Image

from clients.file_db_server import run_on_file_database
from macros.smart_calls import TangoThread
from macros.smart_calls import proxy as device_proxy
from servers.CoordMapperDS.device import CoordMapperDS
from servers.ParticleDS.device import ParticleDS
from servers.RegistrationDS.device import RegistrationDS
from tests.device_server import serve_devices
from tests.fake_devices import SPOTS

SETTINGS = {"Diameter": 7, "MinMass": 200.0, "Separation": 5.0, "IsolationRadius": 20.0, "NoiseSize": 1.0}
IDENTITY = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
CLIENTS = 6


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("clients")
    spots, shifted = folder / "spots.tif", folder / "shifted.tif"
    tifffile.imwrite(spots, SPOTS)
    tifffile.imwrite(shifted, np.roll(SPOTS, (3, 5), axis=(0, 1)))
    return {"spots": str(spots), "shifted": str(shifted), "folder": str(folder)}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two devices of each of RegistrationDS, ParticleDS and CoordMapperDS in one server process."""
    devices = {f"test/{kind}/{i}": (cls, {}) for kind, cls in (("registration", "RegistrationDS"),
                                                               ("particles", "ParticleDS"),
                                                               ("mapper", "CoordMapperDS")) for i in (1, 2)}
    with serve_devices([RegistrationDS, ParticleDS, CoordMapperDS], devices,
                       tmp_path_factory.mktemp("clients-db")) as trls:
        yield trls


def _proxy(trl: str) -> tango.DeviceProxy:
    proxy = device_proxy(trl, 10_000)
    return proxy


def _warm_up(particles: tango.DeviceProxy, path: str) -> None:
    """Settings and one detection: the first Detect of a server imports and compiles trackpy (seconds on a
    busy machine), which is not what these tests are about."""
    for name, value in SETTINGS.items():
        particles.write_attribute(name, value)
    particles.Detect(json.dumps({"path": path}))


def _in_threads(work: Callable[[int], Any], count: int = CLIENTS) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads at once (each makes its own proxy); results or exceptions."""
    results: list[Any] = [None] * count
    start = threading.Barrier(count)

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - reported by the caller's assertion
            results[i] = exc

    threads = [TangoThread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def test_concurrent_detects_all_wait_their_turn_and_state_stays_readable(servers: dict[str, str],
                                                                       images: dict[str, str]) -> None:
    trl = servers["test/particles/1"]
    _warm_up(_proxy(trl), images["spots"])
    states: list[tango.DevState] = []
    stop = threading.Event()

    def watch() -> None:
        proxy = _proxy(trl)
        while not stop.is_set():
            states.append(proxy.state())

    watcher = TangoThread(target=watch)
    watcher.start()
    try:
        results = _in_threads(lambda i: [json.loads(_proxy(trl).Detect(json.dumps(
            {"path": images["spots" if i % 2 else "shifted"]})))["count"] for _ in range(3)])
    finally:
        stop.set()
        watcher.join(30)
    assert all(result == [6, 6, 6] for result in results), results
    assert states and set(states) <= {tango.DevState.ON, tango.DevState.RUNNING}


def test_detects_from_several_client_processes(servers: dict[str, str], images: dict[str, str]) -> None:
    trl = servers["test/particles/1"]
    _warm_up(_proxy(trl), images["spots"])
    script = ("import json, sys, tango\n"
              "p = tango.DeviceProxy(sys.argv[1]); p.set_timeout_millis(10000)\n"
              "print(sum(json.loads(p.Detect(json.dumps({'path': sys.argv[2]})))['count'] for _ in range(3)))\n")
    processes = [subprocess.Popen([sys.executable, "-c", script, trl, images["spots"]], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        outputs.append((process.returncode, out.strip(), err[-500:]))
    assert all(code == 0 and out == "18" for code, out, _ in outputs), outputs


def test_concurrent_loads_and_registrations(servers: dict[str, str], images: dict[str, str]) -> None:
    trl = servers["test/registration/1"]

    def work(i: int) -> bool:
        proxy = _proxy(trl)
        for slot, key in ((f"ref{i}", "spots"), (f"target{i}", "shifted")):
            proxy.LoadImage(json.dumps({"slot": slot, "path": images[key], "pixel_size_um": 1.0}))
        result = json.loads(proxy.Register(json.dumps({"reference": f"ref{i}", "target": f"target{i}"})))
        return bool(result["success"]) and np.allclose(result["shift_px"], [-5, -3], atol=0.5)

    assert _in_threads(work) == [True] * CLIENTS
    proxy = _proxy(trl)
    assert set(proxy.Slots) >= {f"ref{i}" for i in range(CLIENTS)} and proxy.state() == tango.DevState.ON


def test_concurrent_graph_changes_are_all_kept(servers: dict[str, str]) -> None:
    trl = servers["test/mapper/1"]

    def work(i: int) -> list[str]:
        proxy = _proxy(trl)
        matrix = [[1.0, 0.0, float(i)], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        proxy.SetTransform(json.dumps({"from": f"img{i}", "to": "stage", "matrix": matrix, "from_unit": "px"}))
        return list(proxy.Frames)

    results = _in_threads(work)
    assert all(isinstance(result, list) for result in results), results
    frames = set(_proxy(trl).Frames)
    assert {f"img{i}" for i in range(CLIENTS)} <= frames


def test_two_devices_of_each_class_in_one_server_are_independent(servers: dict[str, str],
                                                                 images: dict[str, str]) -> None:
    first, second = _proxy(servers["test/particles/1"]), _proxy(servers["test/particles/2"])
    for name, value in SETTINGS.items():
        first.write_attribute(name, value)
    second.write_attribute("Diameter", 15)
    assert json.loads(first.Detect(json.dumps({"path": images["spots"]})))["count"] == 6
    assert second.Diameter == 15 and first.Diameter == 7 and second.Count == 0

    reg1, reg2 = _proxy(servers["test/registration/1"]), _proxy(servers["test/registration/2"])
    reg2.LoadImage(json.dumps({"slot": "only-here", "path": images["spots"], "pixel_size_um": 1.0}))
    assert "only-here" in reg2.Slots and "only-here" not in reg1.Slots

    map1, map2 = _proxy(servers["test/mapper/1"]), _proxy(servers["test/mapper/2"])
    map2.SetTransform(json.dumps({"from": "second", "to": "stage", "matrix": IDENTITY, "from_unit": "px"}))
    assert "second" in map2.Frames and "second" not in map1.Frames
    for trl in servers.values():
        assert _proxy(trl).state() in (tango.DevState.ON, tango.DevState.ALARM)


def test_two_cameras_of_different_depths_in_one_server(tmp_path: Path) -> None:
    """An 8-bit and a 16-bit camera in one CameraDS process: both start and stream their values."""
    Image.fromarray(np.full((40, 50), 9, np.uint8)).save(tmp_path / "overview.png")
    tifffile.imwrite(tmp_path / "microscope.tif", np.full((30, 20), 1000, np.uint16))
    devices = {"test/camera/overview": ("CameraDS", {"Source": f"files:{tmp_path}/overview.png"}),
               "test/camera/microscope": ("CameraDS", {"Source": f"files:{tmp_path}/microscope.tif"})}
    executable = str(Path(sys.executable).parent / "CameraDS")
    with run_on_file_database([executable], "CameraDS/two", devices, tmp_path / "db", start_timeout_s=60) as trls:
        overview, microscope = _proxy(trls["test/camera/overview"]), _proxy(trls["test/camera/microscope"])
        for proxy in (overview, microscope):
            assert proxy.state() == tango.DevState.ON
            assert proxy.Snap() == 1
        assert overview.Image.shape == (40, 50) and int(overview.Image.max()) == 9
        assert microscope.Image.shape == (30, 20) and int(microscope.Image.max()) == 1000
        assert overview.get_attribute_config("Image").data_type == microscope.get_attribute_config("Image").data_type
        snaps = _in_threads(lambda i: _proxy(trls[list(devices)[i % 2]]).Snap(), 4)
        assert all(isinstance(number, int) and number >= 2 for number in snaps), snaps
