"""`make bench`: run every ``benchmarks/bench_*.py`` and write ``run/bench/results.json``.

Each module's ``run(report)`` adds its figures; one failing module is reported and
the others still run, so one broken benchmark never hides the rest.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

from benchmarks.harness import Report

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "run" / "bench" / "results.json"


def format_table(report: Report) -> str:
    rows = [("figure", "value", "unit", "baseline", "ratio", "note")]
    for name, fig in report.figures.items():
        rows.append((name, f"{fig.value:.4g}", fig.unit,
                     "-" if fig.baseline is None else f"{fig.baseline:.4g}",
                     "-" if fig.ratio is None else f"{fig.ratio:.3g}", fig.note))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--only", nargs="*", help="module names to run, e.g. bench_registration")
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args(argv)
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if args.only:
        modules = [m for m in modules if m in args.only]
    report = Report()
    failed = []
    for name in modules:
        started = time.monotonic()
        print(f"running {name} ...", flush=True)
        try:
            importlib.import_module(f"benchmarks.{name}").run(report)
        except Exception:  # noqa: BLE001 - report and go on with the next module
            traceback.print_exc()
            failed.append(name)
        print(f"  {name} took {time.monotonic() - started:.1f} s", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report.as_json(), indent=1))
    print()
    print(format_table(report))
    print(f"\nresults written to {args.output}")
    if failed:
        print(f"FAILED benchmark modules: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
