"""ParticleCore: detection summary, ROI offsets, outputs, and refusals that lose nothing."""

from __future__ import annotations

import csv
import json
import threading

import numpy as np
import pytest

from servers.common.errors import BadArgument, NotFound, NotReady
from servers.ParticleDS import ParticleCore
from servers.ParticleDS.annotate import CROWDED_RGB, ISOLATED_RGB

from .synthetic import render_spots

LAYOUT = np.array([[40.0, 40.0], [200.0, 60.0], [120.0, 150.0], [128.0, 152.0], [60.0, 200.0],
                   [215.0, 215.0]])
"""Four lone spots and one close pair (8 px apart)."""


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return render_spots((256, 256), LAYOUT, sigma=1.5, peak=150, background=20, noise=3, seed=2)


def _core() -> ParticleCore:
    return ParticleCore({"Diameter": 7, "MinMass": 200.0, "Separation": 5.0, "IsolationRadius": 20.0})


def test_detect_summary_and_results(image: np.ndarray) -> None:
    core = _core()
    summary = core.detect(image)
    assert summary.count == 6 and summary.isolated == 4
    assert summary.elapsed_ms > 0 and summary.roi == (0, 0, 256, 256)
    found = np.column_stack([core.x, core.y])
    for point in LAYOUT:
        assert np.min(np.hypot(*(found - point).T)) < 0.3
    crowded = np.column_stack([core.x, core.y])[~core.isolated]
    assert sorted(np.round(crowded[:, 0])) == [120, 128]
    for name in ("x", "y", "mass", "size", "eccentricity", "signal", "isolated", "nn_distance"):
        assert len(getattr(core, name)) == 6
    assert core.isolated.dtype == bool and core.x.dtype == np.float64


def test_roi_positions_are_in_source_pixels(image: np.ndarray) -> None:
    full, cropped = _core(), _core()
    full.detect(image)
    summary = cropped.detect(image, roi=[100, 120, 80, 70])
    assert summary.count == 2
    for x, y in zip(cropped.x, cropped.y, strict=True):
        assert np.min(np.hypot(full.x - x, full.y - y)) < 0.01  # band-pass edges and 8-bit scaling differ


def test_overrides_apply_to_one_call_only(image: np.ndarray) -> None:
    core = _core()
    summary = core.detect(image, overrides={"IsolationRadius": 5.0})
    assert summary.isolated == 6
    assert core.settings.IsolationRadius == 20.0


def test_cluster_larger_than_maxsize_is_no_result_but_a_neighbour() -> None:
    blob = np.array([[100.0 + dx, 100.0 + dy] for dx in (-2, 0, 2) for dy in (-2, 0, 2)])
    single = np.array([[114.0, 100.0], [40.0, 40.0]])
    picture = render_spots((200, 200), np.vstack([blob, single]), sigma=1.5, peak=60, noise=2, seed=4)
    core = ParticleCore({"Diameter": 11, "MinMass": 200.0, "MaxSize": 2.2, "IsolationRadius": 20.0,
                         "Separation": 8.0})
    core.detect(picture)
    assert core.count == 2, "the cluster is filtered out by MaxSize"
    near = np.argmin(np.hypot(core.x - 114, core.y - 100))
    assert not core.isolated[near], "yet the particle beside it is not isolated"
    assert core.isolated[1 - near]
    assert core.results is not None and core.results.neighbours_only >= 1


def _bad_calls(image: np.ndarray):
    return [
        ("even Diameter", lambda c: c.detect(image, overrides={"Diameter": 8}), BadArgument, "odd"),
        ("negative MinMass", lambda c: c.detect(image, overrides={"MinMass": -1.0}), BadArgument, "MinMass"),
        ("constant image", lambda c: c.detect(np.full((128, 128), 7, np.uint16)), BadArgument, "constant"),
        ("constant ROI", lambda c: c.detect(np.pad(image, ((0, 0), (0, 64))), roi=[256, 0, 64, 64]),
         BadArgument, "constant"),
        ("empty ROI", lambda c: c.detect(image, roi=[10, 10, 0, 50]), BadArgument, "empty"),
        ("ROI outside", lambda c: c.detect(image, roi=[200, 200, 100, 100]), BadArgument, "outside"),
        ("negative ROI", lambda c: c.detect(image, roi=[-5, 0, 50, 50]), BadArgument, "outside"),
        ("tiny ROI", lambda c: c.detect(image, roi=[10, 10, 4, 4]), BadArgument, "too small"),
        ("NaN pixels", lambda c: c.detect(np.where(image > 100, np.nan, 1.0)), BadArgument, "NaN"),
        ("stack", lambda c: c.detect(np.zeros((5, 64, 64))), BadArgument, "shape"),
        ("empty image", lambda c: c.detect(np.zeros((0, 10))), BadArgument, "empty"),
        ("unknown override", lambda c: c.detect(image, overrides={"Radius": 3}), BadArgument, "unknown"),
        ("bad setting", lambda c: c.set_setting("Diameter", 10), BadArgument, "odd"),
    ]


@pytest.mark.parametrize("case", range(13))
def test_refusal_keeps_earlier_results_and_settings(image: np.ndarray, case: int) -> None:
    name, call, error, fragment = _bad_calls(image)[case]
    core = _core()
    core.detect(image)
    before_table, before_x, before_settings = core.table(), core.x.copy(), core.settings
    before_annotated = core.annotated_image()
    with pytest.raises(error) as caught:
        call(core)
    assert fragment in caught.value.desc, name
    assert core.table() == before_table
    np.testing.assert_array_equal(core.x, before_x)
    assert core.settings == before_settings
    np.testing.assert_array_equal(core.annotated_image(), before_annotated)


def test_nothing_before_the_first_detection() -> None:
    core = ParticleCore()
    assert core.count == 0 and core.x.shape == (0,) and core.isolated.dtype == bool
    assert core.table() == "[]"
    with pytest.raises(NotReady):
        core.export_csv("/tmp/never.csv")
    with pytest.raises(NotReady):
        core.annotated_image()


def test_table_rows_match_the_arrays(image: np.ndarray) -> None:
    core = _core()
    core.detect(image)
    rows = json.loads(core.table())
    assert [row["index"] for row in rows] == list(range(core.count))
    assert [row["x"] for row in rows] == core.x.tolist()
    assert [row["isolated"] for row in rows] == core.isolated.tolist()
    assert set(rows[0]) == {"index", "x", "y", "mass", "size", "ecc", "signal", "isolated", "nn_distance",
                            "multiplicity", "on_bright_area"}


def test_export_csv_round_trip_and_bad_folder(image: np.ndarray, tmp_path) -> None:
    core = _core()
    core.detect(image)
    written = core.export_csv(str(tmp_path / "particles.csv"))
    with open(written, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == core.count
    np.testing.assert_allclose([float(r["y"]) for r in rows], core.y)
    assert [r["isolated"] == "true" for r in rows] == core.isolated.tolist()
    with pytest.raises(NotFound):
        core.export_csv(str(tmp_path / "missing" / "p.csv"))
    with pytest.raises(BadArgument):
        core.export_csv(str(tmp_path))


def test_annotated_image_marks_particles_in_two_colours(image: np.ndarray) -> None:
    core = _core()
    core.detect(image)
    rgb = core.annotated_image()
    assert rgb.shape == (256, 256, 3) and rgb.dtype == np.uint8
    colours = {tuple(c) for c in rgb.reshape(-1, 3)}
    assert ISOLATED_RGB in colours and CROWDED_RGB in colours
    grey = core.annotated_image(rgb=False)
    assert grey.shape == (256, 256) and grey.dtype == np.uint8
    radius = 7 // 2 + 2
    for x, y, lone in zip(core.x, core.y, core.isolated, strict=True):
        ring = rgb[int(round(y)) - radius - 1:int(round(y)) + radius + 2, int(round(x)) - radius - 1:
                   int(round(x)) + radius + 2]
        wanted = np.array(ISOLATED_RGB if lone else CROWDED_RGB)
        assert np.any(np.all(ring == wanted, axis=-1))


def test_concurrent_reads_see_one_consistent_detection(image: np.ndarray) -> None:
    core = _core()
    core.detect(image)
    other = render_spots((256, 256), LAYOUT[:3], sigma=1.5, peak=150, noise=3, seed=9)
    problems: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            results = core.results
            if results is not None and len({len(results.x), len(results.isolated), len(results.mass)}) != 1:
                problems.append("inconsistent lengths")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for k in range(11):
        core.detect(other if k % 2 else image)
    stop.set()
    for thread in threads:
        thread.join()
    assert problems == []
    assert core.count == 6
