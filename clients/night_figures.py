"""The night's two pictures: the drift against the truth, and the hits on the overview.

``night_drift.png``: the true stage offset (sample and beam drift together, ``truth.json``
``drift``) over the simulated night, against where the system put the beam for each visit
relative to its particle's drift-free position (``target - sample_to_stage(p)``: the drift and
alignment offset the system assumed; the gap to the truth is the visit's hit error) and where
the X-ray map found the particle (``ce_centre - sample_to_stage(p)``: what the X-rays saw).
``night_hits.png``: the overview SEM image (one region: that image) with every region's
outline and every visit's particle, green within 100 nm, red beyond, grey without a position.
Both are drawn from the files of the night and the truth only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clients.figures import _stretch, add_scale_bar, plt, save
from clients.night_score import HIT_LIMIT_NM, UM_PER_UNIT, Truth

if TYPE_CHECKING:
    from clients.night import NightInputs

HIT, MISS, UNKNOWN = "#20c020", "#e02020", "#a0a0a0"


def drift_figure(truth: Truth, summary: dict[str, Any]) -> Any:
    """x and y (nm) against simulated hours: truth, the system's beam placement, the X-ray centres."""
    nm = UM_PER_UNIT.get(truth.stage_unit, math.nan) * 1000.0
    fig, axes = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    scored = [s for s in summary["scored"] if math.isfinite(s.get("started_sim_s", math.nan))]
    end = max([*(s["started_sim_s"] for s in scored), *(truth.drift_t_s[-1:] if len(truth.drift_t_s) else [])],
              default=0.0)
    grid = np.linspace(0.0, end, 400)
    true = (np.array([truth.stage_offset(t) for t in grid]) if truth.offset_function is not None
            else np.column_stack([np.interp(grid, truth.drift_t_s, truth.drift_offset[:, k]) for k in range(2)])
            if len(truth.drift_t_s) else np.zeros((0, 2)))
    for k, (ax, name) in enumerate(zip(axes, ("x", "y"), strict=True)):
        if len(true) and truth.drifts:
            ax.plot(grid / 3600.0, true[:, k] * nm, "-", color="black", linewidth=1.2,
                    label="true drift (the simulation's stage_offset)")
        else:
            ax.axhline(0.0, color="black", linewidth=1.2, label="true drift: none (this beamline does not drift)")
        if scored:
            hours = np.array([s["started_sim_s"] for s in scored]) / 3600.0
            free = np.array([truth.to_stage(truth.particles[s["truth_particle"]])[k] for s in scored])
            placed = (np.array([s["target_x" if k == 0 else "target_y"] for s in scored]) - free) * nm
            ax.plot(hours, placed, "o", color="#3070c0", markersize=3, label="beam placed by the system")
            seen = (np.array([s["ce_x" if k == 0 else "ce_y"] for s in scored]) - free) * nm
            ax.plot(hours, seen, ".", color="#c03030", markersize=3, alpha=0.7,
                    label="particle found by the X-ray map")
        ax.set_ylabel(f"{name} offset (nm)")
        ax.grid(alpha=0.3)
    if not scored:
        axes[0].text(0.5, 0.5, "no visit has a simulated start time (SmartClock not set)", ha="center",
                     transform=axes[0].transAxes)
    axes[0].set_title("drift over the night: truth against where the system put the beam")
    axes[-1].set_xlabel("simulated time since the night's start (h)")
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def hits_figure(overview: np.ndarray, overview_pixel_um: float, overview_to_sample: np.ndarray, truth: Truth,
                region_shapes: dict[str, tuple[int, int]], summary: dict[str, Any]) -> Any:
    """The overview with each region's outline and each visit's particle coloured by its hit."""
    to_px = np.linalg.inv(overview_to_sample)

    def project(points_um: np.ndarray) -> np.ndarray:
        homogeneous = np.column_stack([points_um, np.ones(len(points_um))])
        return (to_px @ homogeneous.T).T[:, :2]

    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(_stretch(overview), cmap="gray", interpolation="nearest")
    for name, (width, height) in region_shapes.items():
        corners = np.array([[0, 0], [width, 0], [width, height], [0, height], [0, 0]], float)
        outline = project(np.array([truth.to_sample(name, c) for c in corners]))
        ax.plot(outline[:, 0], outline[:, 1], "-", color="cyan", linewidth=1.0)
        ax.text(outline[0, 0], outline[0, 1], f" {name}", color="cyan", fontsize=8, va="bottom")
    scored = summary["scored"]
    if scored:
        px = project(truth.particles[[s["truth_particle"] for s in scored]])
        colours = [UNKNOWN if not math.isfinite(s["hit_error_nm"]) else HIT if s["hit_error_nm"] <= HIT_LIMIT_NM
                   else MISS for s in scored]
        ax.scatter(px[:, 0], px[:, 1], s=14, facecolors="none", edgecolors=colours, linewidths=1.0)
    hits = sum(math.isfinite(s["hit_error_nm"]) and s["hit_error_nm"] <= HIT_LIMIT_NM for s in scored)
    ax.set_title(f"{hits} of {len(scored)} visits within {HIT_LIMIT_NM:.0f} nm (green), beyond (red)")
    add_scale_bar(ax, overview_pixel_um, overview.shape[1], below=True)
    ax.set_axis_off()
    fig.tight_layout()
    return fig


def _tiff(path: Path) -> tuple[np.ndarray, float]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return tif.pages[0].asarray(), float(json.loads(tif.pages[0].description)["pixel_size_um"])


def draw(out_dir: Path, inputs: NightInputs, truth: Truth, summary: dict[str, Any]) -> list[Path]:
    """Both figures into ``out_dir``; the paths written."""
    written = [save(drift_figure(truth, summary), out_dir / "night_drift.png")]
    overview_path = inputs.overview or inputs.regions[0].image
    overview_name = "overview" if inputs.overview else inputs.regions[0].name
    if overview_name in truth.regions:
        image, pixel_um = _tiff(overview_path)
        shapes = {}
        for region in inputs.regions:
            if region.name in truth.regions:
                shapes[region.name] = _tiff(region.image)[0].shape[1::-1]
        written.append(save(hits_figure(image, pixel_um, truth.regions[overview_name], truth, shapes, summary),
                            out_dir / "night_hits.png"))
    return [path for path in written if path is not None]
