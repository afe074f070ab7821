"""The night's throughput: fraction of wall time spent exposing, particles per hour, overhead.

Two small nights on the same sample (same seed, chaos off so both see the same beam), run
through the Door by ``clients/night.py`` exactly as ``make night`` runs them and scored by
``clients/night_score.py`` against the truth: one with every mesh sized by the target's
uncertainty (the product's default), one with every mesh the fixed ±0.3 µm, 13 x 13 points a
user would otherwise ask for (``--no-scan-sizing``). The ratios say what sizing buys; the hit
rates say what it costs. Each night takes 5-10 minutes on two cores.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import Report
from clients.night import main as run_night

SEED = 4
NIGHT = ["--particles", "10", "--regions", "2", "--tile-px", "1536", "--hours", "0.5", "--acceleration", "4",
         "--fine-particles", "3", "--no-chaos", "--seed", str(SEED), "--quiet"]
"""Small enough for a benchmark; two tiles so the night's hierarchy of regions is in it."""


def night_summary(run_dir: Path, *extra: str) -> dict[str, Any]:
    code = run_night([*NIGHT, "--run-dir", str(run_dir), *extra])
    if code != 0:
        raise RuntimeError(f"the night ({' '.join(extra) or 'default'}) failed; logs in {run_dir / 'stack' / 'logs'}")
    return json.loads((run_dir / "summary.json").read_text())


def run(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="smart-bench-night-") as tmp:
        sized = night_summary(Path(tmp) / "sized")
        fixed = night_summary(Path(tmp) / "fixed", "--no-scan-sizing")
    note = f"seed {SEED}, {sized['done']} particles, 2 tiles; baseline: the same night, fixed 13x13 meshes"
    for key, unit in (("exposing_fraction", "fraction"), ("particles_per_hour", "1/h")):
        ours, theirs = float(sized[key]), float(fixed[key])
        report.add(f"night_{key}", ours, unit, baseline=theirs, ratio=ours / theirs if theirs else None, note=note)
    ours, theirs = float(sized["overhead_s_median"]), float(fixed["overhead_s_median"])
    report.add("night_overhead_s_median", ours, "s", baseline=theirs, ratio=theirs / ours if ours else None,
               note="per particle, outside the mesh's exposures; ratio = baseline / ours")
    report.add("night_within_100nm", float(sized["within_100nm"]), "fraction", baseline=float(fixed["within_100nm"]),
               note="visits within 100 nm of their particle, scored against truth.json")
