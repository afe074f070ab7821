"""The `smart` subcommands against the running stack: JSON out, SMART_* one-line refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tango
import tifffile

from clients import cli
from clients.commands import SmartClient
from clients.launcher import REPO
from tests.system.conftest import device_trl
from tests.system.test_gui import BEAM, A, calibrate


def smart(capsys: pytest.CaptureFixture[str], stack, *words: str) -> tuple[int, str, str]:  # noqa: ANN001
    code = cli.main([*words, "--tango-host", stack.tango_host])
    out, err = capsys.readouterr()
    return code, out, err


def test_map_camera_to_stage_follows_the_calibration(stack, capsys) -> None:  # noqa: ANN001
    calibrate(stack)
    code, out, err = smart(capsys, stack, "map", "camera", "stage", "1100", "1000",
                           "--stage-position", "0.5", "0.6", "--json")
    assert code == 0, err
    result = json.loads(out)
    expected = np.array([0.5, 0.6]) + A @ (np.array([1100.0, 1000.0]) - np.array(BEAM))
    assert np.allclose(result["points"][0], expected, atol=1e-9)
    assert result["within_limits"] == [True]


def test_refusal_is_one_line_with_the_smart_reason(stack) -> None:  # noqa: ANN001
    env = {k: v for k, v in os.environ.items() if k != "TANGO_HOST"}
    done = subprocess.run([sys.executable, "-m", "clients.cli", "map", "nowhere", "stage", "1", "2",
                           "--tango-host", stack.tango_host], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("smart map: SMART_NotFound: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == ""


def test_goto_a_camera_point_through_the_door(stack, capsys) -> None:  # noqa: ANN001
    calibrate(stack)
    before = np.array(SmartClient(stack.tango_host).stage_position())
    code, out, err = smart(capsys, stack, "goto", "--frame", "camera", "1043.5", "1013.5", "--json")
    assert code == 0, err
    result = json.loads(out)
    expected = before + A @ np.array([20.0, -10.0])
    assert np.allclose(result["stage_position"], expected, atol=2e-5)
    assert result["macro"].startswith("smart_goto_xy camera")


def test_register_a_camera_frame_and_detect_and_goto_a_particle(stack, capsys, tmp_path: Path) -> None:  # noqa: ANN001
    calibrate(stack)
    camera = tango.DeviceProxy(device_trl(stack, "smart/camera/1"))
    camera.Snap()
    frame_path = tmp_path / "frame.tif"
    camera.SaveImage(str(frame_path))
    code, out, err = smart(capsys, stack, "register", str(frame_path), "--model", "translation",
                           "--frame", "clitest", "--json")
    assert code == 0, err
    registered = json.loads(out)
    assert registered["frame"] == "clitest" and registered["registration"]["success"]
    assert np.allclose(registered["registration"]["shift_px"], [0, 0], atol=1.0)

    # five bright spots on a dark field, in the registered frame's pixels
    spots = [(1000.0, 1000.0), (1100.0, 1050.0), (950.0, 1150.0), (1200.0, 900.0), (1010.0, 1300.0)]
    yy, xx = np.mgrid[0:2048, 0:2048]
    image = np.full((2048, 2048), 100.0)
    for x, y in spots:
        image += 3000.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
    spot_path = tmp_path / "spots.tif"
    tifffile.imwrite(spot_path, image.astype(np.uint16))
    code, out, err = smart(capsys, stack, "particles", str(spot_path), "--set", "Diameter=7",
                           "--set", "MinMass=1000", "--set", "Separation=4", "--json")
    assert code == 0, err
    found = json.loads(out)
    assert found["count"] == len(spots)
    got = sorted((round(r["x"]), round(r["y"])) for r in found["particles"])
    assert got == sorted((round(x), round(y)) for x, y in spots)

    code, out, err = smart(capsys, stack, "particles", "--show", "--json")
    assert code == 0 and json.loads(out)["count"] == len(spots)
    code, out, err = smart(capsys, stack, "particles", "--show")  # for people: a header, units, one row each
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith(f"{len(spots)} particles, ")
    assert lines[1].split() == ["index", "x", "(px)", "y", "(px)", "mass", "size", "(px)", "ecc", "isolated",
                                "nearest", "(px)"]
    assert len(lines) == 2 + len(spots)
    assert [float(line.split()[1]) for line in lines[2:]] == pytest.approx(
        [r["x"] for r in found["particles"]], abs=0.006)

    row = found["particles"][0]
    index, px = row["index"], np.array([row["x"], row["y"]])
    code, out, err = smart(capsys, stack, "goto", str(index), "--json")
    assert code == 0, err
    # clitest is the camera frame grabbed at registration: X = S_reg + A (p - b)
    expected = np.array(registered["stage_position"]) + A @ (px - np.array(BEAM))
    assert np.allclose(json.loads(out)["stage_position"], expected, atol=5e-5)

    code, out, err = smart(capsys, stack, "goto", "999")
    assert code == 1 and "SMART_NotFound" in err
