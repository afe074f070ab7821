"""Coverage of the cross-modal (contained) registration's reported 1-sigmas, per case
(not part of `make bench`; issue 14: "an uncertainty that means something").

For every accepted case: the true error of the target centre's image per axis, of the
rotation and of the scale, each divided by the reported 1-sigma (``uncertainty``). A
calibrated sigma gives |ratio| <= 2 in ~95 % of cases.

Case sets:

- ``tuning``: the corpus renderer's tuning scenes only (renderer seeds 1-3) with fresh random
  streams (as ``study_crossmodal_scale tuning``), ``bar`` and ``ratio`` variants;
- ``beamline``: the virtual beamline's SEM -> camera scenes (seeds x SEM-field offsets, as
  ``simulation.scenes.sem_in_camera``, as
  ``tests/unit/registration/test_sem_camera.py`` uses them), what the workflow's coarse
  alignment sees;
- ``corpus``: the bench's own ``crossmodal-*`` cases (held-out rows are for reporting only).

    PYTHONPATH=. .venv/bin/python -m benchmarks.study_crossmodal_sigma tuning 16
    PYTHONPATH=. .venv/bin/python -m benchmarks.study_crossmodal_sigma beamline 10

Columns: accepted, centre error x and y (camera px), reported shift sigma x and y, the ratios
error / sigma for x, y, rotation and scale; the summary gives the fraction within 2 sigma and
the 95th percentile and maximum of |ratio| per quantity. The rows are also written to
``run/study_crossmodal_sigma_<set>.json``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from benchmarks.corpus import cases, evaluate
from benchmarks.study_crossmodal_scale import corpus_cases, tuning_cases
from simulation.scenes import sem_in_camera

BEAMLINE_OFFSETS = ((0.0, 0.0), (250.0, -180.0), (-200.0, 150.0))


def beamline_cases(seeds: int) -> list[cases.Case]:
    out = []
    for seed in range(1, seeds + 1):
        for offset in BEAMLINE_OFFSETS:
            frame, camera_px, sem_image, truth = sem_in_camera(seed, offset)
            sem, sem_px = sem_image.image, sem_image.pixel_size_um
            out.append(cases.Case(f"beamline:seed{seed}:{offset[0]:+.0f},{offset[1]:+.0f}", f"beamline-seed{seed}",
                                  "beamline", "beamline", "similarity", frame, sem, truth, camera_px, sem_px))
    return out


def measure(case: cases.Case) -> dict:
    outcome = evaluate.run_ours(case)
    row = {"name": case.name, "split": case.split,
           "accepted": outcome.accepted, "note": outcome.note[:80]}
    if not outcome.accepted:
        return row
    errors = outcome.errors()
    sigma = outcome.sigma
    row.update(dx=errors["dx"], dy=errors["dy"], sx=sigma["shift_px"][0], sy=sigma["shift_px"][1],
               rotation=errors["signed_rotation"], sigma_rotation=sigma["rotation_deg"],
               scale=errors["signed_scale"], sigma_scale=sigma["scale"], point=errors["point"])
    row["ratios"] = {"x": row["dx"] / row["sx"], "y": row["dy"] / row["sy"],
                     "rotation": row["rotation"] / row["sigma_rotation"], "scale": row["scale"] / row["sigma_scale"]}
    return row


def summary(rows: list[dict]) -> str:
    accepted = [r for r in rows if r["accepted"]]
    if not accepted:
        return f"{len(rows)} cases, none accepted"
    parts = [f"{len(accepted)} of {len(rows)} accepted"]
    for key in ("x", "y", "rotation", "scale"):
        ratios = np.abs([r["ratios"][key] for r in accepted])
        parts.append(f"{key}: within 2 sigma {100 * np.mean(ratios <= 2):.0f} %, |ratio| p95 "
                     f"{np.percentile(ratios, 95):.2f} max {ratios.max():.2f}")
    centre = np.array([[r["dx"], r["dy"]] for r in accepted])
    sigmas = np.array([[r["sx"], r["sy"]] for r in accepted])
    parts.append(f"centre error rms x {math.sqrt(np.mean(centre[:, 0] ** 2)):.3f} y "
                 f"{math.sqrt(np.mean(centre[:, 1] ** 2)):.3f} px, max |.| {np.abs(centre).max():.3f}; shift sigma "
                 f"median {np.median(sigmas):.3f} range {sigmas.min():.3f}-{sigmas.max():.3f} px")
    return "; ".join(parts)


def main(which: str, count: int = 8) -> None:
    if which == "corpus":
        chosen = corpus_cases()
    elif which == "beamline":
        chosen = beamline_cases(count)
    else:
        chosen = tuning_cases(count)
    print(f"{'case':36s} {'split':8s} acc     dx      dy     sx     sy   r_x    r_y    r_rot  r_scale")
    rows = []
    for index, case in enumerate(chosen):
        row = measure(case)
        rows.append(row)
        name = f"{index:3d} {case.name}" if case.split == "beamline" else f"{index:3d} {case.kind}:{case.source}"
        if row["accepted"]:
            r = row["ratios"]
            print(f"{name:36s} {row['split']:8s} y {row['dx']:+.3f} {row['dy']:+.3f} {row['sx']:.3f} {row['sy']:.3f} "
                  f"{r['x']:+5.2f} {r['y']:+5.2f} {r['rotation']:+5.2f} {r['scale']:+5.2f}", flush=True)
        else:
            print(f"{name:36s} {row['split']:8s} n  {row['note']}", flush=True)
    for split in sorted({r["split"] for r in rows}):
        print(f"{split}: {summary([r for r in rows if r['split'] == split])}")
    out = Path("run") / f"study_crossmodal_sigma_{which}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"rows written to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tuning", *(int(v) for v in sys.argv[2:3]))
