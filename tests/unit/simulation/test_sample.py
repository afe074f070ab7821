"""Sample generator and strict sample loader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from servers.common.errors import BadArgument, NotFound
from simulation.generate import SampleRecipe, generate_sample, isolated_mask
from simulation.sample import load_sample, sample_from_json


def test_same_seed_same_json_bytes_different_seed_differs():
    assert generate_sample(5).dumps() == generate_sample(5).dumps()
    assert generate_sample(5).dumps() != generate_sample(6).dumps()


def test_round_trip_through_json_is_exact(tmp_path):
    sample = generate_sample(2)
    path = tmp_path / "s.json"
    sample.save(path)
    again = load_sample(path)
    assert again.dumps() == sample.dumps()
    assert again.count == sample.count
    # the generator quantises as the file does: in memory and reloaded are the same sample
    for name in ("x", "y", "d", "angle_deg"):
        assert np.array_equal(getattr(again, name), getattr(sample, name))


@pytest.mark.parametrize("seed", range(5))
def test_generated_sample_is_realistic(seed):
    sample = generate_sample(seed)
    assert 100 <= sample.width <= 500 and 100 <= sample.height <= 500
    assert 300 <= sample.count <= 6000
    assert np.all((sample.x > 0) & (sample.x < sample.width) & (sample.y > 0) & (sample.y < sample.height))
    # ~50 nm cubes with a lognormal spread
    assert 0.045 < np.median(sample.d) < 0.055
    assert 0.10 < np.std(np.log(sample.d)) < 0.20
    # most are in groups by count (agglomerates are big) but hundreds are isolated
    isolated = isolated_mask(sample, 2.0)
    assert isolated.sum() > 300
    # agglomerates: dense spots of many cubes within ~1.5 µm
    from scipy.spatial import cKDTree

    neighbours = np.array([len(v) for v in cKDTree(np.column_stack([sample.x, sample.y]))
                           .query_ball_point(np.column_stack([sample.x, sample.y]), 1.0)])
    assert neighbours.max() > 50


def test_nffa_marker_layout():
    sample = generate_sample(0)
    frames = [m for m in sample.markers if m.shape == "frame"]
    assert len(frames) == 3 and all(m.size == 10.0 for m in frames)
    for f in frames:  # each frame holds a 2x2 square and a 6x3 L
        inside = [m for m in sample.markers if m is not f and abs(m.x - f.x) < 5 and abs(m.y - f.y) < 5]
        assert sorted(m.shape for m in inside) == ["L", "square"]
        square = next(m for m in inside if m.shape == "square")
        ell = next(m for m in inside if m.shape == "L")
        assert square.size == 2.0 and (ell.w, ell.h) == (6.0, 3.0)
        # near a corner of the membrane
        assert min(f.x, sample.width - f.x) < 0.25 * sample.width
        assert min(f.y, sample.height - f.y) < 0.25 * sample.height


def test_central_sem_field_holds_markers_and_agglomerates():
    """The default SEM field (82 µm around the centre) must share features with the camera."""
    sample = generate_sample(4)
    cx, cy = sample.centre
    central = [m for m in sample.markers if abs(m.x - cx) < 38 and abs(m.y - cy) < 38]
    assert len(central) >= 3
    near = (np.abs(sample.x - cx) < 38) & (np.abs(sample.y - cy) < 38)
    assert near.sum() > 200  # agglomerates of hundreds of cubes


def test_marker_rectangles_do_not_overlap_and_cover_the_shape():
    """XRF sums Pt over a marker's rectangles: overlap would count Pt twice. Checked by
    sampling points densely over every marker."""
    from simulation.raster import _rect_sdf

    for marker in generate_sample(0).markers:
        r = marker.extent() + 0.5
        gx, gy = np.meshgrid(np.linspace(marker.x - r, marker.x + r, 201), np.linspace(marker.y - r, marker.y + r, 201))
        hits = sum((_rect_sdf(gx, gy, rect) < -1e-9).astype(int) for rect in marker.rectangles())
        assert hits.max() == 1, marker
        area = sum(w * h for _, _, w, h, _ in marker.rectangles())
        expected = {"square": marker.size**2, "frame": marker.size**2 - (marker.size - 2 * (marker.line or 0.5))**2}
        if marker.shape in expected:
            assert np.isclose(area, expected[marker.shape])


def _valid() -> dict:
    return {"field": {"width": 100, "height": 100},
            "particles": [{"x": 1, "y": 2, "d": 0.05, "material": "CeO2"} for _ in range(5)],
            "markers": [{"x": 10, "y": 10, "shape": "L", "size": 6, "angle_deg": 0, "w": 6, "h": 3}]}


@pytest.mark.parametrize("mutate, expected", [
    (lambda s: s["particles"][3].update(d=-0.05), "particles[3].d: must be a positive number"),
    (lambda s: s["particles"][3].update(d=0), "particles[3].d: must be a positive number"),
    (lambda s: s["particles"][1].update(x="3"), "particles[1].x: must be a finite number"),
    (lambda s: s["particles"][1].update(y=True), "particles[1].y: must be a finite number"),
    (lambda s: s["particles"][2].pop("y"), "particles[2].y: missing"),
    (lambda s: s["particles"][0].update(colour=1), "particles[0].colour: unknown key"),
    (lambda s: s["particles"][4].update(material="Au"), "particles[4].material: must be one of"),
    (lambda s: s["markers"][0].update(shape="circle"), "markers[0].shape: must be one of"),
    (lambda s: s["markers"][0].update(size=-1), "markers[0].size: must be a positive number"),
    (lambda s: s["markers"][0].pop("angle_deg"), "markers[0].angle_deg: missing"),
    (lambda s: s["field"].update(width=0), "field.width: must be a positive number"),
    (lambda s: s.update(extra=1), "sample.extra: unknown key"),
    (lambda s: s.update(particles={}), "particles: must be a list"),
])
def test_malformed_sample_is_refused_naming_the_field(mutate, expected):
    data = _valid()
    mutate(data)
    with pytest.raises(BadArgument) as err:
        sample_from_json(data)
    assert expected in err.value.desc
    assert err.value.reason == "SMART_BadArgument"


def test_nan_in_file_is_refused_and_missing_file_is_not_found(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_valid()).replace('"d": 0.05', '"d": NaN', 1))
    with pytest.raises(BadArgument, match="NaN"):
        load_sample(path)
    with pytest.raises(NotFound):
        load_sample(tmp_path / "nope.json")


def test_recipe_controls_the_size():
    small = generate_sample(1, SampleRecipe(width=200, height=150, isolated=100, small_clusters=5, agglomerates=2,
                                            central_agglomerates=1))
    assert (small.width, small.height) == (200, 150)
    assert np.all(small.x < 200) and np.all(small.y < 150)
