"""CameraDS streaming: frames/s a subscribed client really receives, against a bare pytango
device pushing the same frames, both in their own server processes on loopback.

The question a beamline user asks is "what does CameraDS cost me over pushing the
image myself?". So the baseline is the thinnest possible device (``BarePusher``: the
same decoded frames in memory, one ``push_change_event`` per frame in a loop) and the
figure is the ratio of the rates one client receives from each, measured back to back
in the same run. CameraDS runs with the ``files`` source at TargetFrameRate 0 (as fast
as possible) and pays for what the bare device skips: the source read and stat, the
metadata, and the data-ready, FrameNumber and FrameMetadata events of every frame.

The sim figure is CameraDS with the ``sim`` source at 2048x2048 against the renderer
alone in this process (how many frames/s ``CameraRenderer.render`` manages): the ratio
says how much of the renderer's speed reaches a client.

Run: ``python -m benchmarks --only bench_camera``; or ``python -m benchmarks.bench_camera``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import tango
from tango.server import Device, attribute, command, device_property

from benchmarks.harness import Report
from clients.file_db_server import run_on_file_database

WARMUP_S = 0.8
WINDOW_S = 2.0
ROUNDS = 5
"""Bare and CameraDS are measured alternately, ROUNDS times each; the ratio reported is the
median of the per-round ratios. The 2 cores are shared with whatever else runs, and
comparing neighbours in time cancels slow drifts of that load instead of charging them to
whichever side happened to run during a busy moment."""
BARE_RUN_S = WARMUP_S + WINDOW_S + 0.3
FRAMES = 6
SIZES = (1024, 2048)
SIM_TARGET_FPS = 20.0


class BarePusher(Device):
    """The baseline: frames preloaded from ``Glob``, pushed as change events in a tight loop
    for ``RunSeconds``. The loop ends by itself: while it runs it re-takes the device monitor
    after every push and a Stop command would wait for it in vain (CameraDS pauses 2 ms
    between frames for exactly that reason; the baseline does not, to stay bare)."""

    Glob = device_property(dtype=str, default_value="")
    RunSeconds = device_property(dtype=float, default_value=5.0)

    def init_device(self) -> None:
        super().init_device()
        import glob

        import tifffile

        self._frames = [tifffile.imread(p) for p in sorted(glob.glob(self.Glob))]
        self._current = self._frames[0]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.set_change_event("Image", True, False)

    @attribute(dtype=((np.uint16,),), max_dim_x=8192, max_dim_y=8192)
    def Image(self) -> np.ndarray:
        return self._current

    @command
    def Start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @command
    def Stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        i = 0
        end = time.monotonic() + self.RunSeconds
        while not self._stop.is_set() and time.monotonic() < end:
            self._current = self._frames[i % len(self._frames)]
            self.push_change_event("Image", self._current)
            i += 1


class BenchMotor(Device):
    """A motor that stands still: the sim camera reads its Position for every frame."""

    @attribute(dtype=float, unit="mm")
    def Position(self) -> float:
        return 0.0


def _received_rate(trl: str, prepare: Any = None, stops_itself: bool = False) -> float:
    """Frames/s one client receives as Image change events (values extracted as numpy)."""
    proxy = tango.DeviceProxy(trl)
    proxy.set_timeout_millis(10000)
    if prepare:
        prepare(proxy)
    times: list[float] = []
    lock = threading.Lock()

    def on_event(event: Any) -> None:
        if not event.err and event.attr_value.value is not None:
            with lock:
                times.append(time.perf_counter())

    # Subscribe before Start and unsubscribe after the bare loop ended: both need the monitor.
    event_id = proxy.subscribe_event("Image", tango.EventType.CHANGE_EVENT, on_event)
    proxy.Start()
    started = time.monotonic()
    try:
        time.sleep(WARMUP_S)
        with lock:
            start = len(times)
        t0 = time.perf_counter()
        time.sleep(WINDOW_S)
        with lock:
            received = len(times) - start
        elapsed = time.perf_counter() - t0
    finally:
        if stops_itself:
            time.sleep(max(0.0, started + BARE_RUN_S + 0.2 - time.monotonic()))
        else:
            proxy.Stop()
        proxy.unsubscribe_event(event_id)
    return received / elapsed


def _write_frames(folder: Path, size: int) -> str:
    import tifffile

    rng = np.random.default_rng(size)
    for i in range(FRAMES):
        tifffile.imwrite(folder / f"f{size}_{i}.tif", rng.integers(0, 4096, (size, size), dtype=np.uint16))
    return str(folder / f"f{size}_*.tif")


def _renderer_rate() -> float:
    from simulation.camera import CameraRenderer
    from simulation.config import default_beamline

    beamline = default_beamline(1)
    renderer = CameraRenderer(beamline.sample, beamline.mounting, beamline.camera, seed=1)
    renderer.render((0.0, 0.0))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 2.0:
        renderer.render((0.0, 0.0), frame_index=n)
        n += 1
    return n / (time.perf_counter() - t0)


def run(report: Report) -> None:
    python = sys.executable
    bare_cmd, motor_cmd = ([python, "-c", "import sys, tango.server; from benchmarks import bench_camera as b; "
                            f"tango.server.run((b.{cls},), args=['BenchServer', *sys.argv[1:]])"]
                           for cls in ("BarePusher", "BenchMotor"))
    camera_cmd = [str(Path(python).parent / "CameraDS")]
    with tempfile.TemporaryDirectory(prefix="bench-camera-") as tmp:
        folder = Path(tmp)
        for size in SIZES:
            pattern = _write_frames(folder, size)
            bare_props = {"Glob": pattern, "RunSeconds": BARE_RUN_S}
            with run_on_file_database(bare_cmd, f"BenchServer/bare{size}",
                                      {"bench/bare/1": ("BarePusher", bare_props)}, folder) as bare_trls, \
                    run_on_file_database(camera_cmd, f"CameraDS/bench{size}",
                                         {"bench/camera/1": ("CameraDS", {"Source": f"files:{pattern}"})},
                                         folder) as cam_trls:
                bares, ours_all = [], []
                for _ in range(ROUNDS):
                    bares.append(_received_rate(bare_trls["bench/bare/1"], stops_itself=True))
                    ours_all.append(_received_rate(cam_trls["bench/camera/1"],
                                                   lambda p: p.write_attribute("TargetFrameRate", 0.0)))
            bare, ours = statistics.median(bares), statistics.median(ours_all)
            ratio = statistics.median(o / b for o, b in zip(ours_all, bares, strict=True))
            report.add(f"camera_files_{size}_uint16_fps", ours, "frames/s", baseline=bare, ratio=ratio,
                       note=f"received by one subscriber; baseline = bare pytango device pushing the same "
                            f"{size}x{size} uint16 frames; ratio = median of {ROUNDS} alternated rounds; "
                            "target >= 0.8")
        renderer = _renderer_rate()
        motors = {"bench/motor/x": ("BenchMotor", {}), "bench/motor/y": ("BenchMotor", {})}
        with run_on_file_database(motor_cmd, "BenchServer/motors", motors, folder) as motor_trls:
            props = {"Source": "sim", "StageMotors": [motor_trls["bench/motor/x"], motor_trls["bench/motor/y"]],
                     "SimSeed": 1}
            with run_on_file_database(camera_cmd, "CameraDS/benchsim", {"bench/camera/1": ("CameraDS", props)},
                                      folder) as trls:
                sim = _received_rate(trls["bench/camera/1"], lambda p: p.write_attribute("TargetFrameRate", 0.0))
        report.add("camera_sim_2048_uint16_fps", sim, "frames/s", baseline=renderer, ratio=sim / renderer,
                   note=f"sim source received by one subscriber; baseline = CameraRenderer.render alone in one "
                        f"process; target >= {SIM_TARGET_FPS:g} frames/s")


if __name__ == "__main__":
    from benchmarks.__main__ import format_table

    result = Report()
    run(result)
    print(format_table(result))
