"""The campaign's results as JSON and as the Markdown table docs/reliability.md shows."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from tests.reliability.outcomes import CallRecord


def fuzz_rows(records: list[CallRecord]) -> list[dict[str, Any]]:
    """One row per device and command/attribute: how many calls, how they were answered, what failed."""
    groups: dict[tuple[str, str], list[CallRecord]] = defaultdict(list)
    for record in records:
        groups[(record.device, record.target)].append(record)
    rows = []
    for (device, target), group in sorted(groups.items()):
        outcomes = Counter(r.reply.outcome for r in group)
        failed = [r for r in group if r.failed]
        cases = sorted({r.case for r in group if r.case})
        rows.append({
            "device": device, "target": target, "kind": "write" if group[0].kind == "write" else "command",
            "calls": len(group), "outcomes": dict(outcomes), "corpus_cases": cases,
            "failed": len(failed), "defects": sorted({r.defect or "UNEXPLAINED" for r in failed}),
            "failures": [_failure(r) for r in failed[:5]],
        })
    return rows


def _failure(r: CallRecord) -> str:
    what = r.case or r.argument[:80]
    return (f"{what}: {r.reply.outcome} {r.reply.reason}".strip() + f"; next valid call {r.next_valid.outcome} "
            f"{r.next_valid.reason}".rstrip() + (f"; {r.recovered_by}" if r.recovered_by else ""))


def write(results: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False, default=str))
    text = markdown(results)
    (out / "results.md").write_text(text)
    return out / "results.md"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Command: `{results['command']}`  ", f"Date: {results['date']} (UTC), {results['machine']}  ",
             f"Duration: {results.get('duration_s', 0):.0f} s"
             + ("" if "passed" in results else " (still running)"), ""]
    verdicts = results.get("verdicts", {})
    if verdicts:
        lines += ["| check | result |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in verdicts.items()]
        lines.append("")
    fuzz = results.get("fuzz")
    if fuzz:
        lines += [f"### Fuzz and hostile files ({fuzz['calls']} hostile calls, {fuzz['examples']} generated "
                  f"examples per target, seed {fuzz['seed']}; restarts needed: {fuzz['restarts']})", "",
                  "| device | command / attribute | calls | answers | failed | what failed | defect |",
                  "|---|---|---|---|---|---|---|"]
        for row in fuzz["rows"]:
            answers = ", ".join(f"{k} {v}" for k, v in sorted(row["outcomes"].items()))
            lines.append(f"| {row['device']} | {row['target']} | {row['calls']} | {answers} | "
                         f"{'**' + str(row['failed']) + '**' if row['failed'] else 0} | "
                         f"{_cell('; '.join(row['failures']))} | {_cell('; '.join(row['defects']))} |")
        lines.append("")
    load = results.get("load")
    if load:
        lines += [f"### Load ({load['clients']} clients, {load['duration_s']:.0f} s; {load['frames_received']} of "
                  f"{load['frames_target']} Image events received, {load['registrations']} of "
                  f"{load['registrations_target']} registrations)", "",
                  "| client | calls | errors | documented refusals (busy) | p50 ms | p95 ms | p99 ms | max ms |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, op in load["operations"].items():
            errors = ", ".join(f"{k} {v}" for k, v in op["errors"].items()) or "0"
            lines.append(f"| {_cell(name)} | {op['calls']} | {_cell(errors)} | {op.get('documented_refusals', 0)} | "
                         f"{op['p50_ms']} | {op['p95_ms']} | {op['p99_ms']} | {op['max_ms']} |")
        lines += ["", f"Resident memory by PID (flat: at most {load['rss_limit_mb']:.0f} MB above the value at the "
                  f"end of the warm-up, {load['warmup_end_s']} s):", "",
                  "| process | start MB | after warm-up MB | max after MB | end MB | growth MB | flat |",
                  "|---|---|---|---|---|---|---|"]
        for name, m in load["memory"].items():
            flat = "" if m["flat"] is None else ("yes" if m["flat"] else "**NO**")
            lines.append(f"| {name} | {m['start_mb']} | {m['after_warmup_mb']} | {m['max_after_warmup_mb']} | "
                         f"{m['end_mb']} | {m['growth_mb']} | {flat} |")
        lines.append("")
    faults = results.get("faults")
    if faults:
        lines += ["### Faults during the workflow", "",
                  "| fault | result | background client during it | back after s | lost | unusable | what happened |",
                  "|---|---|---|---|---|---|---|"]
        for row in faults:
            saw = row["clients_saw"]
            lost = _cell("; ".join(row["lost"]) or "nothing")
            unusable = _cell("; ".join(row["unusable"]) or "none")
            lines.append(f"| {_cell(row['fault'])} | {'PASS' if row['passed'] else '**FAIL**'} | "
                         f"{saw['calls']} calls, {saw['failed']} failed | {row['clients_recovered_after_s']} | "
                         f"{lost} | {unusable} | "
                         f"{_cell((row.get('note') or '') + (' ' + row['error'] if row['error'] else ''))} |")
        lines.append("")
    return "\n".join(lines)
