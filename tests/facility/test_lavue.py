"""lavue (DESY's live viewer) shows CameraDS ``Image`` and ParticleDS ``AnnotatedImage``.

Each test runs the real ``lavue`` program with the command line of docs/deployment.md
("Viewers") under a private Xvfb, grabs the X screen and finds the device's own image in
it (normalised cross-correlation over the displayed size, see tests/xdisplay.py): the
proof that lavue read the attribute through its Tango attribute source and drew it, not
only that it started. lavue draws row 0 at the bottom (y up), so the screen holds the
image flipped top to bottom; a rotated copy of the same image must not match, which
shows the comparison tells images apart.

Runs in `make test-facility` (~3-5 min: lavue starts slowly). Screenshots land in
``$SMART_SCREENSHOT_DIR`` (docs/images/ holds the ones in the docs) or the test's
temporary directory. Needs Xvfb: ``make viewer-deps``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tango
import tifffile

from clients.file_db_server import stop_process
from clients.launcher import Stack
from tests.system import conftest as system_fixtures
from tests.system.conftest import device_trl
from tests.unit.particles.synthetic import render_spots
from tests.xdisplay import Match, find_on_screen, grab, wait_until, x_env, xvfb

pytestmark = pytest.mark.system

stack = system_fixtures.stack
"""The running stack of tests/system (its session fixture), here in tests/facility too."""
LAVUE = str(Path(sys.executable).parent / "lavue")
SHOWN = 0.85
"""Correlation of the (blurred) screen with the device's image above which it is shown. Seen:
the simulated camera's frame 0.998, the annotated test scene 0.91; the same images rotated by
90 degrees 0.69 and 0.30, hence the rotated copy must stay below SHOWN - 0.1."""
WAIT_S = 120.0
"""lavue starts in ~10 s on an idle 2-core machine, several times that under load."""


@pytest.fixture(scope="module")
def display(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with xvfb(log_dir=tmp_path_factory.mktemp("xvfb")) as name:
        yield name


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SMART_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def lavue_command(trl: str, *options: str) -> list[str]:
    """The documented command line: lavue's Tango attribute source on one attribute, started."""
    return [LAVUE, "--source", "tangoattr", "--configuration", trl, "--start", *options]


def run_lavue(command: list[str], display: str, home: Path, stack: Stack) -> subprocess.Popen[bytes]:
    env = x_env(display, home)
    env["TANGO_HOST"] = stack.tango_host or ""
    log = open(home / "lavue.log", "wb")  # noqa: SIM115 - the child holds it; closed with the test's tmp dir
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def shown(display: str, expected: np.ndarray, lavue: subprocess.Popen[bytes], log: Path) -> tuple[np.ndarray, Match]:
    """Wait until the screen holds ``expected``; the screen and where it is."""
    last: list[tuple[np.ndarray, Match]] = []

    def look() -> bool:
        if lavue.poll() is not None:
            raise AssertionError(f"lavue exited ({lavue.returncode}): {log.read_text(errors='replace')[-2000:]}")
        screen = grab(display)
        last[:] = [(screen, find_on_screen(screen, expected))]
        return last[0][1].score >= SHOWN

    try:
        wait_until(look, WAIT_S, "lavue showing the device's image", interval_s=3.0)
    except TimeoutError:
        score = last[0][1].score if last else float("nan")
        raise AssertionError(f"lavue did not show the image within {WAIT_S:.0f} s (best correlation {score:.3f}); "
                             f"log: {log.read_text(errors='replace')[-2000:]}") from None
    return last[0]


def save_window(screen: np.ndarray, path: Path) -> None:
    """The lavue window (the non-black part of the root window) as a PNG."""
    from PIL import Image

    rows, cols = np.nonzero(screen.max(axis=2) > 0)
    Image.fromarray(screen[rows.min():rows.max() + 1, cols.min():cols.max() + 1]).save(path)


def test_lavue_shows_the_camera_image(stack: Stack, display: str, tmp_path: Path, shots: Path) -> None:
    camera = tango.DeviceProxy(device_trl(stack, "smart/camera/1"))
    camera.set_timeout_millis(10000)
    camera.Snap()
    image = camera.Image.astype(np.float64)  # the frame lavue will read: Image stays until the next Snap
    low, high = int(image.min()), int(image.max())
    lavue = run_lavue(lavue_command(device_trl(stack, "smart/camera/1/Image"), "--scaling", "linear",
                                    "--levels", f"{low},{high}", "--gradient", "grey"), display, tmp_path, stack)
    try:
        screen, match = shown(display, image[::-1], lavue, tmp_path / "lavue.log")
    finally:
        stop_process(lavue)
    assert find_on_screen(screen, np.rot90(image)).score < SHOWN - 0.1
    assert match.box[2] >= 200  # drawn at a size one can look at, not a thumbnail
    save_window(screen, shots / "lavue-camera.png")


@pytest.fixture(scope="module")
def annotated(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> tango.DeviceProxy:
    """ParticleDS after a detection on a scene with isolated and crowded particles."""
    rng = np.random.default_rng(19)
    isolated = rng.uniform(60, 452, (14, 2))
    pairs = np.concatenate([isolated[:4] + [9.0, 0.0]])  # four particles get a close neighbour: crowded
    scene = render_spots((512, 512), np.concatenate([isolated, pairs]), sigma=2.5, peak=160, background=30,
                         noise=2, seed=19)
    path = tmp_path_factory.mktemp("scene") / "scene.tif"
    tifffile.imwrite(path, scene)
    particles = tango.DeviceProxy(device_trl(stack, "smart/particles/1"))
    particles.set_timeout_millis(60000)
    reply = json.loads(particles.Detect(json.dumps({"path": str(path), "Diameter": 9, "MinMass": 300.0,
                                                    "Separation": 5.0, "IsolationRadius": 30.0})))
    assert reply["count"] >= 14 and 0 < reply["isolated"] < reply["count"]
    return particles


def test_lavue_shows_the_annotated_image(stack: Stack, display: str, annotated: tango.DeviceProxy,
                                         tmp_path: Path, shots: Path) -> None:
    image = annotated.AnnotatedImage.astype(np.float64)
    lavue = run_lavue(lavue_command(device_trl(stack, "smart/particles/1/AnnotatedImage"), "--scaling", "linear",
                                    "--levels", "0,255", "--gradient", "grey"), display, tmp_path, stack)
    try:
        screen, _ = shown(display, image[::-1], lavue, tmp_path / "lavue.log")
    finally:
        stop_process(lavue)
    assert find_on_screen(screen, np.rot90(image)).score < SHOWN - 0.1
    save_window(screen, shots / "lavue-annotated-grey.png")


def test_lavue_shows_the_annotated_image_in_colour(stack: Stack, display: str, annotated: tango.DeviceProxy,
                                                   tmp_path: Path, shots: Path) -> None:
    """AnnotatedImageJPEG (Tango's JPEG_RGB) in colour: lavue hands the decoded pixels over in
    B, G, R order, so the documented command maps channels 2,1,0 to red, green, blue. Every
    circle must come out in its own colour: isolated green, crowded orange-red."""
    import cv2

    encoding, payload = annotated.AnnotatedImageJPEG
    assert encoding == "JPEG_RGB"
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    lavue = run_lavue(lavue_command(device_trl(stack, "smart/particles/1/AnnotatedImageJPEG"), "--channel", "2,1,0",
                                    "--scaling", "linear", "--levels", "0,255"), display, tmp_path, stack)
    try:
        screen, match = shown(display, rgb[::-1], lavue, tmp_path / "lavue.log")
    finally:
        stop_process(lavue)
    save_window(screen, shots / "lavue-annotated-colour.png")
    x, y, width, height = match.box
    drawn = screen[y:y + height, x:x + width].astype(int)
    expected = cv2.resize(rgb[::-1], (width, height), interpolation=cv2.INTER_NEAREST).astype(int)
    coloured = expected.max(axis=2) - expected.min(axis=2) > 120  # the circles and labels (thin: ~100 px)
    assert coloured.sum() > 50
    same_hue = np.argmax(drawn[coloured], axis=1) == np.argmax(expected[coloured], axis=1)
    assert same_hue.mean() > 0.8, f"only {same_hue.mean():.0%} of the coloured pixels keep their colour"
