"""Pictures of a workflow run: people would rather look than read a table of errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def sem_with_particles(sem: np.ndarray, x: np.ndarray, y: np.ndarray, isolated: np.ndarray,
                       visited: list[int], path: Path) -> None:
    """The SEM image with detected particles: isolated green, crowded orange, visited numbered."""
    fig, ax = plt.subplots(figsize=(8, 8), dpi=100)
    low, high = np.percentile(sem, [1, 99.8])
    ax.imshow(sem, cmap="gray", vmin=low, vmax=high)
    iso = np.asarray(isolated, bool)
    ax.scatter(x[iso], y[iso], s=30, facecolors="none", edgecolors="lime", linewidths=0.8, label="isolated")
    ax.scatter(x[~iso], y[~iso], s=30, facecolors="none", edgecolors="orange", linewidths=0.8, label="crowded")
    for index in visited:
        ax.annotate(str(index), (x[index], y[index]), color="cyan", fontsize=8, xytext=(6, -6),
                    textcoords="offset points")
    ax.set_title(f"SEM: {len(x)} particles, {int(iso.sum())} isolated, {len(visited)} visited")
    ax.legend(loc="lower right")
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def camera_with_outline(camera: np.ndarray, outline_px: np.ndarray, beam_px: tuple[float, float],
                        path: Path) -> None:
    """The camera frame with the registered SEM field's outline (its corners in this frame's
    pixels) and the beam position."""
    fig, ax = plt.subplots(figsize=(8, 8), dpi=100)
    low, high = np.percentile(camera, [1, 99.8])
    ax.imshow(camera, cmap="gray", vmin=low, vmax=high)
    outline = np.vstack([outline_px, outline_px[:1]]).T
    ax.plot(outline[0], outline[1], color="cyan", linewidth=1.2, label="registered SEM field")
    ax.plot([beam_px[0]], [beam_px[1]], marker="+", color="red", markersize=14, label="beam")
    ax.set_title("camera with the registered SEM outline")
    ax.legend(loc="lower right")
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def xrf_maps(maps_dir: Path, records: list[dict[str, Any]], path: Path, limit: int = 20) -> None:
    """One Ce-L map per visited particle, with the target (+) and the true position (x)."""
    files = sorted(maps_dir.glob("particle_*.npz"), key=lambda p: int(p.stem.split("_")[1]))[:limit]
    if not files:
        return
    by_index = {r["index"]: r for r in records}
    cols = min(5, len(files))
    rows = math.ceil(len(files) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), dpi=100, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, file in zip(axes.ravel(), files, strict=False):
        data = np.load(file)
        x, y, ce = data["x"], data["y"], data["ce"]
        xs, ys = np.unique(np.round(x, 9)), np.unique(np.round(y, 9))
        grid = np.full((len(ys), len(xs)), np.nan)
        grid[np.searchsorted(ys, np.round(y, 9)), np.searchsorted(xs, np.round(x, 9))] = ce
        extent = [(xs[0] - data["target"][0]) * 1e6, (xs[-1] - data["target"][0]) * 1e6,
                  (ys[-1] - data["target"][1]) * 1e6, (ys[0] - data["target"][1]) * 1e6]
        ax.imshow(grid, cmap="magma", extent=extent)
        ax.plot(0, 0, "+", color="cyan", markersize=10)
        index = int(file.stem.split("_")[1])
        record = by_index.get(index)
        if record:
            ax.plot((record["true_x"] - data["target"][0]) * 1e6, (record["true_y"] - data["target"][1]) * 1e6,
                    "x", color="lime", markersize=8)
            ax.set_title(f"#{index}: {record['fine_error_um'] * 1000:.0f} nm", fontsize=9)
        ax.set_axis_on()
        ax.tick_params(labelsize=6)
    fig.suptitle("Ce-L maps around each target (nm from target; + target, x truth)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
