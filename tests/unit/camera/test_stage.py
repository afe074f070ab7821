"""Stage reads with a deadline, without Tango: a motor whose read hangs (a stopped Pool)
must neither stall the frame stream nor be reported as fine, and the camera must recover
by itself when the motor answers again."""

from __future__ import annotations

import threading

import numpy as np

from servers.CameraDS.acquisition import ALARM, RUNNING, Acquisition
from servers.CameraDS.sources import Source, SourceFrame
from servers.CameraDS.stage import StageMonitor
from tests.helpers import wait_for

HANG_LIMIT_S = 30.0
"""A hung read is released by the test; this only ends it if the test itself fails."""


class HangingStage:
    """samx blocks while ``hang`` is set (like a Pool under SIGSTOP); samy always answers."""

    names = ["samx", "samy"]

    def __init__(self) -> None:
        self.hang = threading.Event()
        self.release = threading.Event()
        self.samx_calls = 0

    def read_one(self, name: str) -> float:
        if name == "samx":
            self.samx_calls += 1
            if self.hang.is_set():
                self.release.wait(HANG_LIMIT_S)
            return 1.5
        return 2.0

    def read(self) -> dict[str, float | None]:
        return {name: self.read_one(name) for name in self.names}

    def freeze(self) -> None:
        self.release.clear()
        self.hang.set()

    def thaw(self) -> None:
        self.hang.clear()
        self.release.set()


class CountingSource(Source):
    kind = "fake"

    def __init__(self) -> None:
        super().__init__("fake:stage")
        self.count = 0

    def open(self) -> None:
        pass

    def read(self, timeout_s: float) -> SourceFrame:
        self.count += 1
        return SourceFrame(np.full((4, 6), self.count, np.uint16))


def test_a_hanging_motor_is_reported_not_waited_for() -> None:
    stage = HangingStage()
    monitor = StageMonitor(stage, deadline_s=0.1)
    try:
        assert monitor.read() == {"samx": 1.5, "samy": 2.0} and monitor.problems() == {}
        stage.freeze()
        assert monitor.read() == {"samx": None, "samy": 2.0}
        assert not stage.release.is_set()  # returned while samx's call still hangs
        assert "motor samx has not answered for" in monitor.problems()["samx"]
        calls = stage.samx_calls
        assert monitor.read() == {"samx": None, "samy": 2.0}
        assert stage.samx_calls == calls  # the hanging call is not doubled by the next frame
        stage.thaw()
        assert wait_for(lambda: monitor.read() == {"samx": 1.5, "samy": 2.0})
        assert monitor.problems() == {}
    finally:
        stage.thaw()
        monitor.close()


def test_a_failing_motor_names_its_error() -> None:
    class Broken:
        names = ["samx"]

        def read_one(self, name: str) -> float:
            raise RuntimeError("device smart/motor/samx is not exported")

    monitor = StageMonitor(Broken(), deadline_s=1.0)
    try:
        assert monitor.read() == {"samx": None}
        assert monitor.problems() == {"samx": "motor samx cannot be read (device smart/motor/samx is not exported)"}
    finally:
        monitor.close()


def test_frames_keep_coming_in_alarm_while_a_motor_hangs_and_recover_by_themselves() -> None:
    stage = HangingStage()
    frames = []
    acq = Acquisition(CountingSource(), StageMonitor(stage, deadline_s=0.1), frames.append)
    acq.settings.target_rate_hz = 50.0
    try:
        acq.start()
        assert wait_for(lambda: len(frames) >= 3 and acq.state == RUNNING)
        assert frames[-1].stage == {"samx": 1.5, "samy": 2.0}
        stage.freeze()
        assert wait_for(lambda: acq.state == ALARM)
        during = len(frames)
        assert wait_for(lambda: len(frames) >= during + 10)  # the stream goes on while samx hangs
        assert not stage.release.is_set()
        assert frames[-1].stage == {"samx": None, "samy": 2.0}
        status = acq.status()
        assert status.startswith("ALARM: the stage position is unknown: motor samx has not answered")
        assert "stage null for samx" in status and "Sardana Pool" in status
        stage.thaw()
        assert wait_for(lambda: acq.state == RUNNING and frames[-1].stage == {"samx": 1.5, "samy": 2.0})
        assert "ALARM" not in acq.status()
    finally:
        stage.thaw()
        acq.close()


def test_motor_reads_and_the_stream_run_in_the_threads_the_device_asks_for() -> None:
    """The device hands in PyTango's omniORB-aware pool and ``tango.EnsureOmniThread``: every
    motor read must run in a thread the given executor made, and every frame must be read and
    published inside the given context (these threads call Tango)."""
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import contextmanager

    pool_threads: set[str] = set()

    class RecordingPool(ThreadPoolExecutor):
        def __init__(self, **kwargs) -> None:  # noqa: ANN003
            super().__init__(initializer=lambda: pool_threads.add(threading.current_thread().name), **kwargs)

    inside: set[str] = set()
    published_inside: list[bool] = []

    @contextmanager
    def omni_thread():
        inside.add(threading.current_thread().name)
        try:
            yield
        finally:
            inside.discard(threading.current_thread().name)

    stage = HangingStage()
    read_in: list[str] = []
    monitor = StageMonitor(stage, read_one=lambda name: read_in.append(threading.current_thread().name) or 1.0,
                           executor=RecordingPool)
    acq = Acquisition(CountingSource(), monitor,
                      lambda frame: published_inside.append(threading.current_thread().name in inside),
                      thread_context=omni_thread)
    try:
        acq.set_target_rate(50.0)
        acq.start()
        assert wait_for(lambda: len(published_inside) >= 3)
    finally:
        acq.close()
    assert published_inside and all(published_inside)
    assert read_in and set(read_in) <= pool_threads and len(pool_threads) == 2  # one worker per motor
