"""A headless X display for viewer tests, and finding a device's image on its screen.

The viewers (lavue) are real X11 programs: the tests start ``Xvfb`` (Debian's package;
``make viewer-deps`` installs it) on a free display number, run the viewer there as a
user would, grab the whole screen and look for the image the device serves in it. The
comparison tolerates what a viewer does to show an image (scaling, its colour map) but
not a different image: it is a normalised cross-correlation over the displayed size.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from clients.file_db_server import stop_process

X_SOCKETS = Path("/tmp/.X11-unix")


def _free_display() -> int:
    """A display number with neither a socket nor a lock file (another Xvfb may run)."""
    for number in range(90, 200):
        if not (X_SOCKETS / f"X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            return number
    raise RuntimeError("no free X display number between :90 and :199")


@contextlib.contextmanager
def xvfb(width: int = 1280, height: int = 1024, log_dir: Path | None = None) -> Iterator[str]:
    """Run ``Xvfb`` on a free display (no TCP), yield ``":N"``, stop it by PID."""
    if shutil.which("Xvfb") is None:
        raise RuntimeError("Xvfb is not installed: run `make viewer-deps` (Debian package xvfb)")
    number = _free_display()
    log = open((log_dir or Path("/tmp")) / f"xvfb-{number}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not (X_SOCKETS / f"X{number}").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Xvfb :{number} did not start (exit {proc.poll()}); see {log.name}")
            time.sleep(0.05)
        yield f":{number}"
    finally:
        stop_process(proc)
        log.close()


def x_env(display: str, home: Path) -> dict[str, str]:
    """The environment of an X11 program on ``display``: the xcb platform (the tests' Qt
    default is offscreen) and a private HOME, so a viewer's saved settings stay out of the
    user's and start the same every run."""
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    home.mkdir(parents=True, exist_ok=True)
    env.update(DISPLAY=display, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_RUNTIME_DIR=str(home), PYTHONUNBUFFERED="1")
    return env


def grab(display: str) -> np.ndarray:
    """The whole screen of ``display`` as an (h, w, 3) uint8 RGB array."""
    from PIL import ImageGrab

    return np.asarray(ImageGrab.grab(xdisplay=display).convert("RGB"))


BLUR_PX = 2.0
"""Gaussian sigma (screen px) applied to the screen and the expected picture before comparing."""


@dataclass
class Match:
    score: float
    """normalised cross-correlation of the expected picture with the screen, -1..1"""
    box: tuple[int, int, int, int]
    """where on the screen: x, y, width, height (px)"""


def find_on_screen(screen: np.ndarray, picture: np.ndarray, min_px: int = 120, max_px: int = 1000) -> Match:
    """Where ``picture`` (grey or RGB, any dtype; scaled to 0..255) is shown on ``screen``, at
    whatever size the viewer drew it: the best normalised cross-correlation over display
    sizes from ``min_px`` to ``max_px`` along the longer side; searched on the half-size
    screen first, then refined at full size around the best place."""
    # both sides blurred: the viewer resamples the image to its size (nearest neighbour or
    # not), which changes pixel noise but not the picture
    gray = cv2.GaussianBlur(cv2.cvtColor(screen, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), BLUR_PX)
    pic = picture.astype(np.float32)
    if pic.ndim == 3:
        pic = cv2.cvtColor(pic, cv2.COLOR_RGB2GRAY)
    pic = (pic - pic.min()) / max(float(np.ptp(pic)), 1e-9) * 255.0
    longest = max(pic.shape)

    def score_at(area: np.ndarray, size: int, offset: tuple[int, int] = (0, 0), factor: int = 1) -> Match:
        scale = size / longest / factor
        width, height = max(1, round(pic.shape[1] * scale)), max(1, round(pic.shape[0] * scale))
        if width >= area.shape[1] or height >= area.shape[0]:
            return Match(-1.0, (0, 0, 0, 0))
        small = cv2.GaussianBlur(cv2.resize(pic, (width, height), interpolation=cv2.INTER_AREA), (0, 0),
                                 BLUR_PX / factor)
        _, best, _, (x, y) = cv2.minMaxLoc(_correlation(area, small))
        return Match(float(best), (offset[0] + x * factor, offset[1] + y * factor, width * factor, height * factor))

    half = cv2.resize(gray, (gray.shape[1] // 2, gray.shape[0] // 2), interpolation=cv2.INTER_AREA)
    coarse = max((score_at(half, size, factor=2) for size in range(min_px, max_px, 16)), key=lambda m: m.score)
    x, y, width, height = coarse.box
    margin = 40
    x0, y0 = max(0, x - margin), max(0, y - margin)
    area = gray[y0:y + height + margin, x0:x + width + margin]
    size = max(width, height)
    return max((score_at(area, s, (x0, y0)) for s in range(max(min_px, size - 16), size + 17, 2)),
               key=lambda m: m.score)


def _correlation(area: np.ndarray, template: np.ndarray, min_std: float = 2.0) -> np.ndarray:
    """Normalised cross-correlation of ``template`` at every place in ``area``; places where
    the screen is (nearly) flat score -1: there the normalisation divides by ~0 and OpenCV
    answers up to 1.0 for a black background."""
    result = cv2.matchTemplate(area, template, cv2.TM_CCOEFF_NORMED)
    height, width = template.shape
    total, squares = cv2.integral2(area.astype(np.float64))[:2]

    def window(table: np.ndarray) -> np.ndarray:
        return (table[height:, width:] - table[:-height, width:] - table[height:, :-width] + table[:-height, :-width])

    count = float(width * height)
    variance = window(squares) / count - (window(total) / count) ** 2
    result[variance < min_std ** 2] = -1.0
    return result


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 1.0):  # noqa: ANN001, ANN201
    """Poll ``predicate`` until it returns something true; its last value, or TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            break
        time.sleep(interval_s)
    if not value:
        raise TimeoutError(f"{what} within {timeout_s:.0f} s")
    return value
