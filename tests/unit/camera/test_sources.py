"""Camera sources without Tango: files, OpenCV video, the sim, Lima decoding, spec parsing."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from servers.CameraDS.sources import (
    FilesSource,
    OpenCVSource,
    SimSource,
    SourceLost,
    coerce,
    decode_lima_video,
    make_source,
    parse_spec,
    split_tango_target,
)
from servers.common.errors import BadArgument, NotReady
from servers.common.lima import LIMA_HEADER, LIMA_MAGIC


def write_sequence(folder: Path, n: int = 3, shape: tuple[int, int] = (40, 60), dtype=np.uint16) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        data = (np.arange(shape[0] * shape[1]).reshape(shape) % 200 + 1000 * i).astype(dtype)
        tifffile.imwrite(folder / f"frame_{i:03d}.tif", data)
        frames.append(data)
    return frames


def write_video(path: Path, n: int = 5, size: tuple[int, int] = (64, 48)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened()
    for i in range(n):
        frame = np.full((size[1], size[0], 3), 40 * i, np.uint8)
        writer.write(frame)
    writer.release()


def test_files_play_in_order_and_loop(tmp_path: Path) -> None:
    frames = write_sequence(tmp_path)
    source = FilesSource("files:x", str(tmp_path / "*.tif"))
    source.open()
    got = [source.read(1.0).data for _ in range(5)]
    for i, data in enumerate(got):
        np.testing.assert_array_equal(data, frames[i % 3])
    assert source.natural_dtype() == np.uint16


def test_files_disappearing_is_a_lost_source_naming_the_file(tmp_path: Path) -> None:
    write_sequence(tmp_path)
    source = FilesSource("files:x", str(tmp_path / "*.tif"))
    source.open()
    source.read(1.0)
    (tmp_path / "frame_001.tif").unlink()
    with pytest.raises(SourceLost, match="frame_001.tif.*disappeared"):
        source.read(1.0)
    for path in tmp_path.glob("*.tif"):
        path.unlink()
    with pytest.raises(SourceLost, match="no file matches"):
        source.read(1.0)


def test_files_changed_on_disk_are_decoded_again(tmp_path: Path) -> None:
    write_sequence(tmp_path, n=1)
    source = FilesSource("files:x", str(tmp_path / "*.tif"))
    source.open()
    source.read(1.0)
    new = np.full((40, 60), 7, np.uint16)
    tifffile.imwrite(tmp_path / "frame_000.tif", new)
    np.testing.assert_array_equal(source.read(1.0).data, new)


def test_files_png_colour_becomes_grey_uint8(tmp_path: Path) -> None:
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 1] = 200  # pure green in RGB order
    cv2.imwrite(str(tmp_path / "a.png"), rgb[..., ::-1])
    source = FilesSource("files:x", str(tmp_path / "*.png"))
    source.open()
    data = source.read(1.0).data
    assert data.shape == (10, 12) and data.dtype == np.uint8
    assert int(data[0, 0]) == round(200 * 0.7154)
    assert source.natural_dtype() == np.uint8


def test_files_corrupt_image_is_reported(tmp_path: Path) -> None:
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    source = FilesSource("files:x", str(tmp_path / "*.tif"))
    source.open()
    with pytest.raises(SourceLost, match="not a readable image"):
        source.read(1.0)


def test_files_refuse_settings_they_cannot_honour(tmp_path: Path) -> None:
    source = FilesSource("files:x", str(tmp_path / "*.tif"))
    with pytest.raises(NotReady, match="no exposure"):
        source.set_exposure(10.0)
    with pytest.raises(NotReady, match="no gain"):
        source.set_gain(2.0)


def test_opencv_video_file_frames_loop_and_refuse_exposure(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    write_video(video, n=4)
    source = OpenCVSource(f"opencv:{video}", str(video))
    source.open()
    levels = [float(source.read(1.0).data.mean()) for _ in range(8)]
    assert source.natural_dtype() == np.uint8
    assert levels[0] < levels[1] < levels[2] < levels[3]
    assert levels[4] == pytest.approx(levels[0], abs=3)  # looped back to the first frame
    with pytest.raises(NotReady, match="does not accept"):
        source.set_exposure(5.0)
    source.close()


def test_opencv_missing_target_is_a_lost_source(tmp_path: Path) -> None:
    source = OpenCVSource("opencv:x", str(tmp_path / "nothing.avi"))
    with pytest.raises(SourceLost, match="cannot open"):
        source.open()


class FakeStage:
    names = ["samx", "samy"]

    def __init__(self) -> None:
        self.position: dict[str, float | None] = {"samx": 0.0, "samy": 0.0}

    def read(self) -> dict[str, float | None]:
        return dict(self.position)


class FakeRenderer:
    def __init__(self) -> None:
        from simulation.config import CameraOptics

        self.optics = CameraOptics(width=32, height=16)
        self.calls: list[tuple] = []

    def reflectance(self, zoom: str) -> None:
        return None

    def render(self, stage_mm, frame_index=0, zoom=None, exposure_ms=None):
        self.calls.append((stage_mm, zoom, exposure_ms, self.optics.gain_dn_per_e))
        return np.full((16, 32), int(1000 * stage_mm[0]) + 5, np.uint16)


def test_sim_renders_at_the_stage_it_stamps() -> None:
    stage, renderer = FakeStage(), FakeRenderer()
    nominal_gain = renderer.optics.gain_dn_per_e
    source = SimSource("sim", renderer, stage, zoom="high")
    source.open()
    stage.position = {"samx": 0.25, "samy": -0.5}
    frame = source.read(1.0)
    assert frame.stage == {"samx": 0.25, "samy": -0.5}
    assert int(frame.data[0, 0]) == 255
    assert frame.pixel_size_um == renderer.optics.zooms["high"].pixel_size_um
    source.set_exposure(7.5)
    source.set_gain(2.0)
    source.read(1.0)
    assert renderer.calls[-1][1:] == ("high", 7.5, pytest.approx(2 * nominal_gain))


def test_sim_follows_the_microscope_zoom_and_needs_motors() -> None:
    stage, renderer = FakeStage(), FakeRenderer()
    zoom = {"value": "low"}
    source = SimSource("sim", renderer, stage, zoom_reader=lambda: zoom["value"])
    assert source.read(1.0).pixel_size_um == renderer.optics.zooms["low"].pixel_size_um
    zoom["value"] = "nonsense"
    with pytest.raises(BadArgument, match="zoom 'nonsense'"):
        source.read(1.0)
    zoom["value"] = "mid"
    stage.position = {"samx": 0.25, "samy": -0.5}
    source.read(1.0)
    stage.position = {"samx": None, "samy": -0.75}  # samx unreadable: rendered where it was last read
    frame = source.read(1.0)
    assert renderer.calls[-1][0] == (0.25, -0.75)
    assert frame.stage == {"samx": None, "samy": -0.75}  # stamped unknown, never guessed
    fresh = SimSource("sim", renderer, stage)
    with pytest.raises(SourceLost, match="samx cannot be read"):  # no position read yet: nothing to render
        fresh.read(1.0)
    with pytest.raises(BadArgument, match="StageMotors"):
        SimSource("sim", renderer, type("S", (), {"names": ["samx"], "read": lambda self: {}})())


def test_real_sim_renderer_builds_from_a_seed() -> None:
    from servers.CameraDS.simbuild import SimProperties, build_sim_source

    source = build_sim_source("sim", SimProperties(seed=3, zoom="low"), FakeStage())
    assert source.fixed_pixel_size_um == pytest.approx(1.1)
    frame = source.read(1.0)
    assert frame.data.dtype == np.uint16 and frame.data.shape == (2048, 2048)
    assert 0 < frame.data.mean() < 4095


def test_lima_video_image_is_decoded() -> None:
    pixels = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000).astype(">u2")
    header = LIMA_HEADER.pack(LIMA_MAGIC, 1, 1, 42, 4, 3, 1, LIMA_HEADER.size, 0, 0)
    np.testing.assert_array_equal(decode_lima_video(header + pixels.tobytes()), pixels.astype(np.uint16))
    with pytest.raises(SourceLost, match="magic"):
        decode_lima_video(struct.pack("!I", 1) + b"\0" * 40)
    colour = LIMA_HEADER.pack(LIMA_MAGIC, 1, 6, 1, 4, 3, 0, LIMA_HEADER.size, 0, 0)
    with pytest.raises(SourceLost, match="Y8 or Y16"):
        decode_lima_video(colour + b"\0" * 36)


@pytest.mark.parametrize("spec", ["", "usb0", "files", "opencv", "tango:a/b/Image", "sim:1"])
def test_bad_source_specs_are_refused_with_the_choices(spec: str) -> None:
    with pytest.raises(BadArgument, match="Source"):
        make_source(spec, tango_factory=lambda s, t: (split_tango_target(t), None)[1])


def test_spec_parsing_and_dtype_coercion() -> None:
    assert parse_spec("files:/d/*.tif") == ("files", "/d/*.tif")
    assert parse_spec("tango:a/b/c/Image") == ("tango", "a/b/c/Image")
    assert parse_spec(" sim ") == ("sim", "")
    wide = coerce(np.array([[0, 255]], np.uint8), np.dtype(np.uint16))
    assert wide.dtype == np.uint16 and wide.tolist() == [[0, 255]]
    narrow = coerce(np.array([[-5.0, 300.4, 65535.0]]), np.dtype(np.uint8))
    assert narrow.tolist() == [[0, 255, 255]]
    assert coerce(np.array([[70000, 3]], np.int32), np.dtype(np.uint16)).tolist() == [[65535, 3]]
