"""The demo's figures carry what a scientist needs to judge them: scale bars, colour bars,
axis labels, and the SEM image laid over the camera where the registration puts it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.colorbar import Colorbar

from clients import figures


def spots(shape: tuple[int, int], points: np.ndarray, sigma: float, height: float = 1000.0) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    image = np.full(shape, 100.0)
    for x, y in points:
        image += height * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return image


def test_nice_length_is_1_2_5() -> None:
    assert [figures.nice_length(s) for s in (1.0, 7.0, 40.0, 1000.0)] == [0.2, 1.0, 5.0, 200.0]
    assert figures.length_label(0.5) == "500 nm" and figures.length_label(20.0) == "20 µm"


def test_sem_figure_has_a_scale_bar_and_numbers_the_scanned_particles(tmp_path: Path) -> None:
    x = np.array([50.0, 120.0, 300.0, 310.0])
    y = np.array([60.0, 200.0, 300.0, 305.0])
    sem = spots((400, 400), np.column_stack([x, y]), 2.0)
    fig = figures.sem_particles_figure(sem, 0.02, x, y, np.array([True, True, False, False]), [1, 0])
    assert figures.scale_bar_labels(fig) == ["1 µm"]  # 400 px x 20 nm = 8 µm field, 1-2-5 near a fifth
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["0", "1"]
    assert "4 particles, 2 isolated, 2 scanned" in ax.get_title()
    assert figures.save(fig, tmp_path / "sem.png").stat().st_size > 0


def test_registration_figure_overlays_the_sem_image_where_the_matrix_puts_it() -> None:
    # SEM: 20 nm/px, 500 x 500 px; camera: 0.5 µm/px, so 25 camera px per SEM field side
    features_sem = np.array([[100.0, 100.0], [400.0, 150.0], [250.0, 420.0]])
    scale, offset = 0.04, np.array([300.0, 200.0])
    sem_to_camera = np.array([[scale, 0, offset[0]], [0, scale, offset[1]], [0, 0, 1]])
    sem = spots((500, 500), features_sem, 12.0)
    camera = spots((600, 600), features_sem * scale + offset, 0.6)
    fig = figures.camera_registration_figure(camera, 0.5, sem, sem_to_camera, (299.5, 299.5))
    assert len(fig.axes) == 3
    labels = figures.scale_bar_labels(fig)
    assert len(labels) == 3 and labels[0] == "50 µm"
    for ax in fig.axes:
        assert ax.get_xlabel() == "x (camera px)" and ax.get_ylabel() == "y (camera px)"
    overlay = fig.axes[2].images[0].get_array()
    assert overlay.ndim == 3 and overlay.shape[2] == 3
    # where the registration is right, SEM (magenta) and camera (green) light up together
    camera_crop, sem_crop = figures._resample_crop(camera, sem, sem_to_camera, (290, 330, 190, 230))
    step = 40 / camera_crop.shape[1]
    for x_cam, y_cam in features_sem * scale + offset:
        row, col = int(round((y_cam - 190) / step)), int(round((x_cam - 290) / step))
        assert camera_crop[row, col] > np.nanpercentile(camera_crop, 95)
        assert sem_crop[row, col] > np.nanpercentile(sem_crop, 95)
    assert np.isnan(sem_crop[0, 0])  # outside the SEM field: no SEM data, not zeros


def test_xrf_maps_have_colour_bars_and_axis_labels_in_um() -> None:
    xs, ys = np.meshgrid(np.arange(-3, 4) * 5e-5, np.arange(-3, 4) * 5e-5)  # mm: 50 nm steps
    target = np.array([1.0, 2.0])
    counts = 100 * np.exp(-(xs**2 + ys**2) / (2 * 1e-4**2))
    data = {"x": (xs + target[0]).ravel(), "y": (ys + target[1]).ravel(), "ce": counts.ravel(), "target": target}
    records = {7: {"true_x": 1.00002, "true_y": 2.0, "fine_error_um": 0.02}}
    fig = figures.xrf_maps_figure([(7, data), (9, data)], records, 1000.0)
    maps = [ax for ax in fig.axes if ax.images]
    assert len(maps) == 2
    for ax in maps:
        assert ax.get_xlabel() == "x from target (µm)" and ax.get_ylabel() == "y from target (µm)"
        assert isinstance(ax.images[0].colorbar, Colorbar)
        assert ax.images[0].colorbar.ax.get_ylabel() == "Ce-L counts"
        left, right, bottom, top = ax.images[0].get_extent()
        assert (left, right) == pytest.approx((-0.175, 0.175)) and bottom < top
    assert maps[0].get_title() == "particle 7: 20 nm off" and maps[1].get_title() == "particle 9"
    assert figures.xrf_maps_figure([], {}, 1000.0) is None
