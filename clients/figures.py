"""Pictures of a workflow run: people would rather look than read a table of errors.

Each figure is built by a function that returns the matplotlib ``Figure`` (so tests can
check its scale bars, colour bars and axis labels) and saved by :func:`save`. Images are
shown in their own pixels with a scale bar in µm; maps in µm from the target, counts on
a colour bar.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar  # noqa: E402

ISOLATED = "lime"
CROWDED = "orange"
OUTLINE = "cyan"
BEAM = "magenta"


def nice_length(span: float) -> float:
    """A 1-2-5 length near a fifth of ``span``, so a scale bar reads at a glance."""
    target = max(span / 5.0, 1e-12)
    power = 10 ** math.floor(math.log10(target))
    return max(m * power for m in (1, 2, 5) if m * power <= target)


def length_label(length_um: float) -> str:
    return f"{length_um * 1000:g} nm" if length_um < 1 else f"{length_um:g} µm"


def add_scale_bar(ax: plt.Axes, pixel_size_um: float, span_px: float, colour: str = "white",
                  below: bool = False) -> AnchoredSizeBar:
    """A 1-2-5 µm (or nm) bar in the lower left of an image axes whose data units are pixels;
    ``below`` puts it under the image instead (in black), where it hides nothing."""
    length_um = nice_length(span_px * pixel_size_um)
    placement = ({"loc": "upper left", "bbox_to_anchor": (0.0, 0.0), "bbox_transform": ax.transAxes} if below
                 else {"loc": "lower left"})
    bar = AnchoredSizeBar(ax.transData, length_um / pixel_size_um, length_label(length_um),
                          color="black" if below else colour, frameon=False, size_vertical=max(span_px / 150, 1e-9),
                          pad=0.6, sep=4, fontproperties={"size": 11, "weight": "bold"}, **placement)
    ax.add_artist(bar)
    return bar


def scale_bar_labels(fig: Figure) -> list[str]:
    """The texts of every scale bar in a figure (for tests and checks)."""
    return [artist.txt_label.get_text() for ax in fig.axes for artist in ax.artists
            if isinstance(artist, AnchoredSizeBar)]


def _stretch(image: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.8) -> np.ndarray:
    """Grey levels to 0..1 between two percentiles; NaN (no data) becomes 0, black."""
    image = np.asarray(image, float)
    if not np.isfinite(image).any():
        return np.zeros_like(image)
    low, high = np.nanpercentile(image, [low_pct, high_pct])
    return np.nan_to_num(np.clip((image - low) / max(high - low, 1e-12), 0.0, 1.0), nan=0.0)


# ------------------------------------------------------------------------- SEM
def sem_particles_figure(sem: np.ndarray, pixel_size_um: float, x: np.ndarray, y: np.ndarray,
                         isolated: np.ndarray, visited: list[int]) -> Figure:
    """The SEM image with detected particles (isolated green, crowded orange) and the visited
    ones numbered with their particle-table index, with a scale bar."""
    fig, ax = plt.subplots(figsize=(8, 8.6), dpi=100)
    ax.imshow(_stretch(sem), cmap="gray", vmin=0, vmax=1)
    iso = np.asarray(isolated, bool)
    ax.scatter(x[iso], y[iso], s=30, facecolors="none", edgecolors=ISOLATED, linewidths=0.8, label="isolated")
    ax.scatter(x[~iso], y[~iso], s=30, facecolors="none", edgecolors=CROWDED, linewidths=0.8, label="crowded")
    visited = [i for i in visited if 0 <= i < len(x)]
    ax.scatter(x[visited], y[visited], s=90, facecolors="none", edgecolors="cyan", linewidths=1.2,
               label="scanned (table index)")
    for index in visited:
        ax.annotate(str(index), (x[index], y[index]), color="cyan", fontsize=8, xytext=(7, -7),
                    textcoords="offset points")
    height, width = sem.shape[:2]
    ax.set_title(f"SEM {width} x {height} px at {pixel_size_um * 1000:.3g} nm/px: {len(x)} particles, "
                 f"{int(iso.sum())} isolated, {len(visited)} scanned", fontsize=10)
    # legend and scale bar below the image: inside it they would hide particles
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, 0.0), ncol=3, fontsize=9, frameon=False)
    ax.set_axis_off()
    add_scale_bar(ax, pixel_size_um, width, below=True)
    fig.tight_layout()
    return fig


# -------------------------------------------------------------- registration
def camera_registration_figure(camera: np.ndarray, camera_pixel_um: float, sem: np.ndarray,
                               sem_to_camera: np.ndarray, beam_px: tuple[float, float] | None,
                               margin: float = 0.4) -> Figure:
    """Three panels to judge the registration by eye: the whole camera frame with the SEM
    field's outline (where it is), the camera crop around that field (what the camera sees
    there) and the same crop with the SEM image mapped onto it (camera in green, SEM in
    magenta: where both show the same structure — the Pt markers — it turns white; an
    offset shows as green and magenta fringes). ``sem_to_camera`` is the 3x3 matrix from
    SEM pixels to this frame's camera pixels."""
    matrix = np.asarray(sem_to_camera, float)
    h, w = sem.shape[:2]
    corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [w - 0.5, h - 0.5, 1], [-0.5, h - 0.5, 1]])
    outline = (matrix @ corners.T).T[:, :2]
    closed = np.vstack([outline, outline[:1]])
    (x0, y0), (x1, y1) = outline.min(axis=0), outline.max(axis=0)
    pad = margin * max(x1 - x0, y1 - y0)
    crop = (x0 - pad, x1 + pad, y0 - pad, y1 + pad)
    camera_crop, sem_on_camera = _resample_crop(camera, sem, matrix, crop)

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.9), dpi=100)
    whole, near, overlay = axes
    whole.imshow(_stretch(camera), cmap="gray", vmin=0, vmax=1)
    whole.plot(closed[:, 0], closed[:, 1], color=OUTLINE, linewidth=1.2)
    whole.add_patch(plt.Rectangle((crop[0], crop[2]), crop[1] - crop[0], crop[3] - crop[2], fill=False,
                                  edgecolor="yellow", linewidth=1.0, linestyle="--"))
    if beam_px is not None:
        whole.plot([beam_px[0]], [beam_px[1]], marker="+", color=BEAM, markersize=14, markeredgewidth=2)
    whole.set_title("whole camera frame: SEM field (cyan),\nshown enlarged (yellow)", fontsize=10)
    add_scale_bar(whole, camera_pixel_um, camera.shape[1])

    extent = (crop[0], crop[1], crop[3], crop[2])
    near.imshow(_stretch(camera_crop, 0.5, 99.5), cmap="gray", vmin=0, vmax=1, extent=extent)
    near.plot(closed[:, 0], closed[:, 1], color=OUTLINE, linewidth=1.0)
    near.set_title("camera around the SEM field", fontsize=10)
    # both from the bare membrane up: the background stays black, structure lights up
    rgb = np.zeros((*camera_crop.shape, 3))
    rgb[..., 1] = _stretch(camera_crop, 75.0, 99.5)  # from above most of the camera noise
    inside = np.isfinite(sem_on_camera)
    if inside.any():
        stretched = np.zeros_like(sem_on_camera)
        stretched[inside] = _stretch(sem_on_camera[inside], 50.0, 99.5)
        rgb[..., 0] = rgb[..., 2] = stretched
    overlay.imshow(rgb, extent=extent)
    overlay.plot(closed[:, 0], closed[:, 1], color=OUTLINE, linewidth=0.8, alpha=0.6)
    overlay.set_title("SEM mapped onto the camera: camera green, SEM magenta\n(white where they agree)",
                      fontsize=10)
    for ax in (near, overlay):
        ax.set_xlim(crop[0], crop[1])
        ax.set_ylim(crop[3], crop[2])
        add_scale_bar(ax, camera_pixel_um, crop[1] - crop[0])
    for ax in axes:
        ax.set_xlabel("x (camera px)")
        ax.set_ylabel("y (camera px)")
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def _resample_crop(camera: np.ndarray, sem: np.ndarray, sem_to_camera: np.ndarray,
                   crop: tuple[float, float, float, float], samples_per_px: int = 4,
                   max_side: int = 900) -> tuple[np.ndarray, np.ndarray]:
    """The camera and the SEM image on one grid over ``crop`` (camera px), finer than the camera:
    the camera interpolated, the SEM averaged down to the grid's spacing first (no aliasing)
    and blurred to about the camera's resolution (a Gaussian of one camera pixel), so that the
    same structure looks alike in both; NaN where either image has no data."""
    from scipy import ndimage

    x_lo, x_hi, y_lo, y_hi = crop
    step = max((x_hi - x_lo) / max_side, (y_hi - y_lo) / max_side, 1.0 / samples_per_px)
    xs = np.arange(x_lo, x_hi, step)
    ys = np.arange(y_lo, y_hi, step)
    gx, gy = np.meshgrid(xs, ys)
    camera_values = ndimage.map_coordinates(np.asarray(camera, float), [gy, gx], order=1, mode="constant",
                                            cval=np.nan)
    to_sem = np.linalg.inv(sem_to_camera)
    sx = to_sem[0, 0] * gx + to_sem[0, 1] * gy + to_sem[0, 2]
    sy = to_sem[1, 0] * gx + to_sem[1, 1] * gy + to_sem[1, 2]
    sem_px_per_cell = step * math.sqrt(abs(np.linalg.det(to_sem[:2, :2])))
    block = max(int(sem_px_per_cell), 1)
    reduced = np.asarray(sem, float)
    if block > 1:
        h, w = (reduced.shape[0] // block) * block, (reduced.shape[1] // block) * block
        reduced = reduced[:h, :w].reshape(h // block, block, w // block, block).mean(axis=(1, 3))
    camera_px_in_reduced = 1.0 / math.sqrt(abs(np.linalg.det(sem_to_camera[:2, :2]))) / block
    reduced = ndimage.gaussian_filter(reduced, camera_px_in_reduced)
    # pixel centres: SEM px p lies at reduced px (p - (block - 1) / 2) / block
    rx, ry = (sx - (block - 1) / 2) / block, (sy - (block - 1) / 2) / block
    sem_values = ndimage.map_coordinates(reduced, [ry, rx], order=1, mode="constant", cval=np.nan)
    outside = (sx < -0.5) | (sy < -0.5) | (sx > sem.shape[1] - 0.5) | (sy > sem.shape[0] - 0.5)
    sem_values[outside] = np.nan
    return camera_values, sem_values


# ----------------------------------------------------------------------- XRF
def xrf_maps_figure(maps: list[tuple[int, dict[str, np.ndarray]]], records: dict[int, dict[str, Any]],
                    um_per_unit: float, channel: str = "Ce-L") -> Figure | None:
    """One XRF map per scanned particle in µm from its target (+), the true particle position
    (x) where known, each with a colour bar in counts; titled with the table index and the
    hit error in nm."""
    if not maps:
        return None
    cols = min(5, len(maps))
    rows = math.ceil(len(maps) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.1 * rows + 0.6), dpi=100, squeeze=False)
    for ax in axes.ravel()[len(maps):]:
        ax.set_axis_off()
    for ax, (index, data) in zip(axes.ravel(), maps, strict=False):
        x, y, counts = (np.asarray(data[k], float) for k in ("x", "y", "ce"))
        target = np.asarray(data["target"], float)
        xs, ys = np.unique(np.round(x, 9)), np.unique(np.round(y, 9))
        grid = np.full((len(ys), len(xs)), np.nan)
        grid[np.searchsorted(ys, np.round(y, 9)), np.searchsorted(xs, np.round(x, 9))] = counts
        dx, dy = (xs - target[0]) * um_per_unit, (ys - target[1]) * um_per_unit
        half_x = (dx[1] - dx[0]) / 2 if len(dx) > 1 else 0.01
        half_y = (dy[1] - dy[0]) / 2 if len(dy) > 1 else 0.01
        image = ax.imshow(grid, cmap="magma", origin="lower", interpolation="nearest",
                          extent=(dx[0] - half_x, dx[-1] + half_x, dy[0] - half_y, dy[-1] + half_y))
        colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
        colorbar.set_label(f"{channel} counts", fontsize=7)
        colorbar.ax.tick_params(labelsize=6)
        ax.plot(0, 0, "+", color="cyan", markersize=11, markeredgewidth=1.5)
        record = records.get(index)
        title = f"particle {index}"
        if record:
            ax.plot((record["true_x"] - target[0]) * um_per_unit, (record["true_y"] - target[1]) * um_per_unit,
                    "x", color="lime", markersize=9, markeredgewidth=1.5)
            if math.isfinite(record.get("fine_error_um", math.nan)):
                title += f": {record['fine_error_um'] * 1000:.0f} nm off"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x from target (µm)", fontsize=7)
        ax.set_ylabel("y from target (µm)", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{channel} maps around each target: + target, x true particle position")
    fig.tight_layout()
    return fig


def load_maps(scans: Path, limit: int = 20) -> list[tuple[int, dict[str, np.ndarray]]]:
    """Each scanned particle's map from Sardana's HDF5 scan files under ``scans`` (a folder or a
    file), by particle index, at most ``limit``: ``x``, ``y``, ``ce`` (the located channel),
    ``target`` and ``centre`` (stage units)."""
    from clients.scandata import particle_maps, read_scans

    maps = []
    for index, scan in sorted(particle_maps(read_scans(scans)).items())[:limit]:
        centre = scan.centre if scan.centre is not None else np.array([np.nan, np.nan])
        maps.append((index, {"x": scan.x, "y": scan.y, "ce": scan.counts, "target": scan.target, "centre": centre}))
    return maps


def save(fig: Figure | None, path: Path) -> Path | None:
    """Write a figure as PNG and free it; None (nothing to draw) writes nothing."""
    if fig is None:
        return None
    fig.savefig(path)
    plt.close(fig)
    return path
