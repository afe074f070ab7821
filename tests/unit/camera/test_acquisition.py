"""The acquisition thread without Tango: streaming, pacing, faults and recovery, Snap,
settings, and the TIFF it saves (read back by the shared image reader)."""

from __future__ import annotations

import functools
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from servers.CameraDS.acquisition import FAULT, ON, RUNNING, Acquisition, Frame
from servers.CameraDS.sources import NoStage, Source, SourceFrame, SourceLost
from servers.CameraDS.tiffsave import save_tiff
from servers.common.errors import BadArgument, Failed, NotFound, NotReady
from servers.common.imageio import read_image
from tests.helpers import wait_for as _wait_for

wait_for = functools.partial(_wait_for, timeout=5.0)  # these waits are bounded at 5 s


class FlakySource(Source):
    """Counts frames into the pixels; ``broken`` makes every read fail like a lost camera."""

    kind = "fake"

    def __init__(self) -> None:
        super().__init__("fake:1")
        self.broken = False
        self.count = 0
        self.opened = 0

    def open(self) -> None:
        if self.broken:
            raise SourceLost("the fake camera is unplugged")
        self.opened += 1

    def read(self, timeout_s: float) -> SourceFrame:
        if self.broken:
            raise SourceLost("the fake camera is unplugged")
        self.count += 1
        return SourceFrame(np.full((8, 10), self.count, np.uint16))


class Stage:
    names = ["samx", "samy"]

    def __init__(self) -> None:
        self.x = 0.0

    def read(self) -> dict[str, float | None]:
        return {"samx": self.x, "samy": 2.0}


class Recorder:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.lock = threading.Lock()

    def __call__(self, frame: Frame) -> None:
        with self.lock:
            self.frames.append(frame)


@pytest.fixture
def rig():
    source, stage, recorder = FlakySource(), Stage(), Recorder()
    acq = Acquisition(source, stage, recorder)
    yield acq, source, stage, recorder
    acq.close()


def test_streams_every_frame_with_its_own_metadata(rig) -> None:
    acq, source, stage, recorder = rig
    acq.set_target_rate(50.0)
    acq.start()
    assert wait_for(lambda: len(recorder.frames) >= 10)
    stage.x = 1.5
    assert wait_for(lambda: recorder.frames[-1].stage["samx"] == 1.5)
    acq.stop()
    numbers = [f.number for f in recorder.frames]
    assert numbers == list(range(1, len(numbers) + 1))
    for frame in recorder.frames:  # pixels and metadata come from the same read
        assert int(frame.data[0, 0]) == frame.number
        meta = frame.metadata()
        assert meta.frame_number == frame.number and meta.pixel_size_um == 1.0
        assert set(meta.stage) == {"samx", "samy"}
        assert not frame.data.flags.writeable
    assert acq.state == ON


def test_frame_rate_is_measured_and_paced(rig) -> None:
    acq, _source, _stage, _recorder = rig
    acq.set_target_rate(40.0)
    acq.start()
    time.sleep(1.0)
    assert acq.frame_rate() == pytest.approx(40.0, rel=0.2)
    acq.set_target_rate(10.0)
    time.sleep(3.2)
    assert acq.frame_rate() == pytest.approx(10.0, rel=0.2)
    acq.stop()
    assert acq.frame_rate() == 0.0


def test_fault_names_the_cause_and_recovers_by_itself(rig) -> None:
    acq, source, _stage, recorder = rig
    acq.set_target_rate(50.0)
    acq.start()
    assert wait_for(lambda: acq.state == RUNNING and recorder.frames)
    source.broken = True
    assert wait_for(lambda: acq.state == FAULT)
    assert "unplugged" in acq.status() and "keeps trying" in acq.status()
    with pytest.raises(Failed, match="unplugged"):
        acq.snap(timeout_s=0.3)
    before = len(recorder.frames)
    source.broken = False
    assert wait_for(lambda: acq.state == RUNNING, timeout=4.0)
    assert wait_for(lambda: len(recorder.frames) > before)
    assert source.opened >= 2  # it really reopened the source


def test_stop_is_immediate_even_in_fault(rig) -> None:
    acq, source, _stage, _recorder = rig
    source.broken = True
    acq.start()
    assert wait_for(lambda: acq.state == FAULT)
    started = time.monotonic()
    acq.stop()
    assert time.monotonic() - started < 0.1
    assert acq.state == ON


def test_snap_while_stopped_and_while_streaming(rig) -> None:
    acq, _source, stage, recorder = rig
    stage.x = 3.0
    first = acq.snap()
    assert first.number == 1 and first.stage == {"samx": 3.0, "samy": 2.0}
    assert recorder.frames[-1] is first and acq.latest is first
    acq.set_target_rate(20.0)
    acq.start()
    frame = acq.snap()
    assert frame.number > first.number
    acq.stop()


def test_snap_error_when_stopped_keeps_the_device_idle(rig) -> None:
    acq, source, _stage, _recorder = rig
    source.broken = True
    with pytest.raises(SourceLost, match="unplugged"):
        acq.snap()
    assert acq.state == ON and "Last Snap failed" in acq.status()


def test_settings_are_checked_and_refusals_change_nothing(rig) -> None:
    acq, _source, _stage, _recorder = rig
    for bad in (float("nan"), -1.0, 0.0, float("inf")):
        with pytest.raises(BadArgument):
            acq.set_pixel_size(bad)
    with pytest.raises(BadArgument, match="TargetFrameRate"):
        acq.set_target_rate(-1.0)
    with pytest.raises(NotReady, match="no exposure"):
        acq.set_exposure(5.0)
    with pytest.raises(BadArgument):
        acq.set_exposure(float("nan"))
    assert acq.settings.exposure_ms == 20.0 and acq.settings.pixel_size_um == 1.0
    acq.set_pixel_size(0.42)
    frame = acq.snap()
    assert frame.pixel_size_um == 0.42 and frame.exposure_ms is None  # not applied -> not stamped


def test_stage_read_error_stamps_none_not_a_guess() -> None:
    class BrokenStage:
        names = ["samx"]

        def read(self):
            raise RuntimeError("motor server down")

    acq = Acquisition(FlakySource(), BrokenStage(), lambda f: None)
    assert acq.snap().stage == {"samx": None}


def test_saved_tiff_keeps_bit_depth_and_pixel_size(tmp_path: Path) -> None:
    acq = Acquisition(FlakySource(), NoStage(), lambda f: None)
    acq.set_pixel_size(0.55)
    frame = acq.snap()
    path = save_tiff(str(tmp_path / "frame.tif"), frame)
    loaded = read_image(path)
    assert loaded.pixel_size_um == pytest.approx(0.55)
    assert loaded.data.dtype == np.uint16
    np.testing.assert_array_equal(loaded.data, frame.data)
    with tifffile.TiffFile(path) as tif:
        meta = json.loads(tif.pages[0].description)
    assert meta["frame_number"] == frame.number and meta["pixel_size_um"] == 0.55


def test_save_refuses_bad_paths_and_no_frame(tmp_path: Path) -> None:
    frame = Acquisition(FlakySource(), NoStage(), lambda f: None).snap()
    with pytest.raises(NotReady, match="no frame"):
        save_tiff(str(tmp_path / "a.tif"), None)
    with pytest.raises(BadArgument, match="relative"):
        save_tiff("a.tif", frame)
    with pytest.raises(BadArgument, match=".tif"):
        save_tiff(str(tmp_path / "a.png"), frame)
    with pytest.raises(NotFound, match="does not exist"):
        save_tiff(str(tmp_path / "missing" / "a.tif"), frame)
    with pytest.raises(BadArgument, match="empty|needs"):
        save_tiff("  ", frame)
    assert list(tmp_path.iterdir()) == []
