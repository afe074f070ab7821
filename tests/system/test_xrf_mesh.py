"""The virtual beamline through real Sardana: a mesh over one particle is a map of it."""

from __future__ import annotations

import numpy as np
from scipy.optimize import curve_fit

from clients.door import DoorClient
from clients.launcher import Stack
from simulation.config import load_beamline
from simulation.generate import isolated_mask
from simulation.mounting import sample_to_stage
from tests.system.conftest import device_trl


def _gaussian(p, amp, x0, y0, sigma, base):
    return amp * np.exp(-((p[0] - x0) ** 2 + (p[1] - y0) ** 2) / (2 * sigma**2)) + base


def _table(output: str) -> dict[str, np.ndarray]:
    lines = output.splitlines()
    header = next(line for line in lines if "#Pt" in line).split()[1:]
    rows = [line.split() for line in lines if line.strip() and line.split()[0].isdigit()]
    data = np.array(rows, float)
    return {name: data[:, k] for k, name in enumerate(header)}


def test_mesh_over_an_isolated_particle_finds_its_true_stage_position(stack: Stack) -> None:
    beamline = load_beamline(stack.beamline)
    sample = beamline.sample
    to_stage = sample_to_stage(sample, beamline.mounting)
    ceo2 = np.asarray(sample.material) == "CeO2"
    candidates = np.flatnonzero(isolated_mask(sample, 3.0) & ceo2)
    stage = (to_stage @ np.vstack([sample.x[candidates], sample.y[candidates], np.ones(len(candidates))]))[:2].T
    # the isolated particle nearest the stage centre of the sample: a short move
    pick = int(np.argmin(np.linalg.norm(stage - np.array(beamline.mounting.offset_mm), axis=1)))
    true_x, true_y = (float(v) for v in stage[pick])
    half, intervals = 0.00015, 15  # +-150 nm in 20 nm steps (mm)
    with DoorClient(device_trl(stack, "smart/door/01")) as door:
        run = door.run(f"mesh samx {true_x - half!r} {true_x + half!r} {intervals} "
                       f"samy {true_y - half!r} {true_y + half!r} {intervals} 0.01", timeout_s=300)
    table = _table(run.text(("Output",)))
    assert len(table["samx"]) == (intervals + 1) ** 2
    x, y, ce = table["samx"], table["samy"], table["xrf_ce"]
    assert ce.max() > 10 * max(np.median(ce), 1.0), "no particle signal in the Ce map"
    start = [ce.max(), x[np.argmax(ce)], y[np.argmax(ce)], 5e-5, float(np.median(ce))]
    (amp, cx, cy, sigma, _), _ = curve_fit(_gaussian, (x, y), ce, p0=start)
    error_nm = np.hypot(cx - true_x, cy - true_y) * 1e6
    assert error_nm <= 10.0, f"Ce-map centre {error_nm:.1f} nm from the particle's true stage position"
    # the map is as wide as the 100 nm FWHM beam convolved with a ~50 nm cube, not smeared
    assert 30e-6 < sigma < 70e-6
