"""Command line: every sub-command writes what it says, deterministically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from simulation.cli import main
from simulation.tiffio import read_tiff


def _run(*args: str) -> int:
    return main([str(a) for a in args])


def test_sample_beamline_sem_camera_xrf_truth(tmp_path, capsys):
    s1, s2 = tmp_path / "s1.json", tmp_path / "s2.json"
    assert _run("sample", "--seed", 8, "-o", s1) == 0
    assert _run("sample", "--seed", 8, "-o", s2) == 0
    assert s1.read_bytes() == s2.read_bytes()

    bl, truth = tmp_path / "bl.json", tmp_path / "truth.json"
    assert _run("beamline", "--seed", 8, "--sample", s1, "-o", bl, "--truth", truth) == 0
    assert "sample_to_stage" in json.loads(truth.read_text())

    sem_a, sem_b, sem_truth = tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "sem_truth.json"
    common = ("--size", 300, 200, "--pixel-size", 0.03, "--rotation", 5, "--seed", 2)
    assert _run("sem", s1, "-o", sem_a, *common, "--truth", sem_truth) == 0
    assert _run("sem", s1, "-o", sem_b, *common) == 0
    image, meta = read_tiff(sem_a)
    assert image.shape == (200, 300) and image.dtype == np.uint16
    assert meta["pixel_size_um"] == 0.03
    assert np.array_equal(image, read_tiff(sem_b)[0])
    assert np.array(json.loads(sem_truth.read_text())["pixel_to_sample"]).shape == (3, 3)
    with tifffile.TiffFile(sem_a) as tif:
        assert tif.pages[0].tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER

    cam_a, cam_b, cam_c = tmp_path / "c1.tif", tmp_path / "c2.tif", tmp_path / "c3.tif"
    assert _run("camera", bl, "-o", cam_a, "--size", 256, 256, "--frame", 3, "--zoom", "low") == 0
    assert _run("camera", bl, "-o", cam_b, "--size", 256, 256, "--frame", 3, "--zoom", "low") == 0
    assert _run("camera", bl, "-o", cam_c, "--size", 256, 256, "--frame", 4, "--zoom", "low") == 0
    a, meta = read_tiff(cam_a)
    assert meta["pixel_size_um"] == 1.1 and meta["frame_number"] == 3 and a.max() <= 4095
    assert np.array_equal(a, read_tiff(cam_b)[0])
    assert not np.array_equal(a, read_tiff(cam_c)[0])

    xrf, xrf_json = tmp_path / "x.tif", tmp_path / "x.json"
    assert _run("xrf", bl, "-o", xrf, "--points", 9, 7, "--step-nm", 500, "--json", xrf_json) == 0
    stack, meta = read_tiff(xrf)
    assert stack.shape == (2, 7, 9) and meta["channels"] == ["Ce_L", "Pt_L"]
    assert np.array_equal(np.array(json.loads(xrf_json.read_text())["Ce_L"]), stack[0])

    truth2 = tmp_path / "truth2.json"
    assert _run("truth", bl, "-o", truth2) == 0
    assert truth2.read_bytes() == truth.read_bytes()
    capsys.readouterr()


def test_bad_sample_file_gives_a_clear_error_and_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"field": {"width": 10, "height": 10},
                               "particles": [{"x": 1, "y": 1, "d": -1, "material": "CeO2"}], "markers": []}))
    assert _run("sem", bad, "-o", tmp_path / "x.tif") == 2
    err = capsys.readouterr().err
    assert "SMART_BadArgument" in err and "particles[0].d: must be a positive number" in err
    assert _run("sem", tmp_path / "missing.json", "-o", tmp_path / "x.tif") == 2
    assert "SMART_NotFound" in capsys.readouterr().err


def test_help_documents_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["sem", "--help"])
    text = capsys.readouterr().out
    for option in ("--pixel-size", "--size", "--centre", "--rotation", "--truth"):
        assert option in text
