"""The morning report opens as HTML, its figures are real PNGs of the stated size, and every
scanned particle has its thumbnail and the place of its data; failures say why.

The night is made of files written by Sardana's own NXscan recorder (tests/system/test_scan_records.py) plus
a visit log and an event log as the loop writes them.

System tier because its nights are written by Sardana's own recorder, which imports tango, not
because a device runs."""

from __future__ import annotations

import base64
import csv
import io
import time
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from clients import cli
from clients.report import FIGURE_PX, THUMB_PX, build_report, find_records, time_budget
from macros import smart_records
from macros.smart_support import VISIT_COLUMNS
from tests.system.test_scan_records import sardana_mesh


class ReportParser(HTMLParser):
    """Images (id, alt, decoded PNG size), thumbnails (particle -> text) and all text."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict] = []
        self.thumbs: dict[str, str] = {}
        self.text: list[str] = []
        self._thumb: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        values = dict(attrs)
        if tag == "div" and "data-label" in values:
            self._thumb = values["data-label"]
            self.thumbs[self._thumb] = ""
        if tag == "img":
            header, _, data = values["src"].partition(",")
            assert header == "data:image/png;base64"
            image = Image.open(io.BytesIO(base64.b64decode(data)))
            assert image.format == "PNG"
            self.images.append({"id": values.get("id"), "alt": values.get("alt"), "size": image.size,
                                "particle": self._thumb})

    def handle_endtag(self, tag: str) -> None:
        if tag == "div":
            self._thumb = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._thumb is not None:
            self.thumbs[self._thumb] += data


def check_report(text: str, scanned: dict[str, str]) -> ReportParser:
    """The checks a scientist's eyes would make, on the HTML: ``scanned`` maps each target that
    has a map (``particle 4``, ``target 7``) to its data location (file::/entry)."""
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    parser = ReportParser()
    parser.feed(text)
    parser.close()
    figures = {image["id"]: image["size"] for image in parser.images if image["id"]}
    assert figures == {"drift": FIGURE_PX, "budget": FIGURE_PX}
    thumbs = {image["particle"]: image["size"] for image in parser.images if image["particle"] is not None}
    assert thumbs == dict.fromkeys(scanned, (THUMB_PX, THUMB_PX))
    for index, location in scanned.items():
        assert location in parser.thumbs[index], (index, parser.thumbs[index])
    assert all(location in text for location in scanned.values())
    return parser


def write_night(run: Path) -> dict[str, str]:
    """Two particles scanned (one without signal), one outside the limits, a drift check and a beam wait."""
    scans = run / "scans"
    scans.mkdir(parents=True)
    log = smart_records.EventLog(str(run / "smart_events.jsonl"))
    rows, locations = [], {}
    for serialno, (index, outcome, peak) in enumerate(((4, "scanned", 2e-5), (9, "scanned_no_signal", 0.0)), 1):
        scan = sardana_mesh(scans / "scans.h5", serialno, (0.5, 0.9), (0.5 + peak, 0.9 - peak))
        stored = smart_records.annotate_scan(scan, smart_records.scan_metadata(
            smart_records.ROLE_PARTICLE, particle_index=index, frame="sem", reference_xy=[10.0 * index, 20.0],
            target=[0.5, 0.9], stage_unit="mm", motors=["samx", "samy"], channel="xrf_ce",
            measured_centre_position=[0.5 + peak, 0.9 - peak], outcome=outcome))
        locations[f"particle {index}"] = f"{stored.file}::/{stored.entry}"
        rows.append({"index": index, "outcome": outcome, "scan_s": 5.0, "overhead_s": 0.5,
                     "scan_file": stored.file, "scan_entry": stored.entry,
                     "message": "" if outcome == "scanned" else "no peak above 5 sigma"})
    rows.append({"index": 12, "outcome": "outside_limits", "overhead_s": 0.1,
                 "message": "target outside the stage limits; skipped"})
    with (run / "visits.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, VISIT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    start = time.time() - 300  # the scans were recorded just now: the events around them
    log.write("align", start, 60.0, step="smart_fine_align")
    log.write("drift_check", start + 70, 2.0, success=True, drift_position=[1e-5, -3e-5])
    log.write("wait_beam", start + 80, 120.0, reason="ring current 0 mA below 10 mA")
    return locations


def test_report_shows_every_map_the_failures_the_drift_and_the_time_budget(tmp_path: Path) -> None:
    locations = write_night(tmp_path)
    (tmp_path / "stack" / "logs").mkdir(parents=True)  # the stack's own files are not results
    (tmp_path / "stack" / "logs" / "visits.csv").write_text("index,outcome\n99,scanned\n")
    text = build_report(tmp_path)
    parser = check_report(text, locations)
    words = " ".join(parser.text)
    assert "target outside the stage limits; skipped" in words and "no peak above 5 sigma" in words
    assert "3 targets visited: 1 outside_limits, 1 scanned, 1 scanned_no_signal" in words
    budget = time_budget(find_records(tmp_path))
    assert budget["scanning"] == 10.0 and budget["moving + bookkeeping"] == 1.1
    assert budget["aligning"] == 62.0 and budget["waiting for beam"] == 120.0


def test_a_cut_event_line_and_an_empty_night_still_give_a_report(tmp_path: Path) -> None:
    (tmp_path / "smart_events.jsonl").write_text('{"kind": "wait_beam", "started": 5, "duration_s": 3}\n{"kind": ')
    text = build_report(tmp_path)
    parser = check_report(text, {})
    assert "0 targets visited: none" in " ".join(parser.text)
    assert time_budget(find_records(tmp_path))["waiting for beam"] == 3.0


def test_smart_report_cli_writes_the_file_and_refuses_a_missing_folder(tmp_path: Path, capsys) -> None:
    locations = write_night(tmp_path / "night")
    assert cli.main(["report", str(tmp_path / "night"), "-o", str(tmp_path / "out.html")]) == 0
    assert f"report written: {tmp_path / 'out.html'}" in capsys.readouterr().out
    check_report((tmp_path / "out.html").read_text(), locations)
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 1
    assert "SMART_NotFound" in capsys.readouterr().err


def test_a_queue_night_reads_its_failures_and_times_from_the_event_log_and_the_files(tmp_path: Path) -> None:
    """smart_run_queue writes no visit log: a target that is a plain point (no particle) has its
    map under "target N", a target that failed before any scan comes from its failure event."""
    scans = tmp_path / "scans"
    scans.mkdir()
    scan = sardana_mesh(scans / "smart_scans.h5", 5, (0.5, 0.9), (0.5, 0.9))
    stored = smart_records.annotate_scan(scan, smart_records.scan_metadata(
        smart_records.ROLE_PARTICLE, particle_index=None, frame="stage", reference_xy=[0.5, 0.9], target=[0.5, 0.9],
        stage_unit="mm", motors=["samx", "samy"], channel="xrf_ce", queue_target_id=7, scan_s=4.0,
        measured_centre_position=[0.5, 0.9], outcome="scanned"))
    log = smart_records.EventLog(str(tmp_path / "smart_events.jsonl"))
    now = time.time()
    log.write("move", now - 10, 1.5, target_id=7, particle=None)
    log.write("wait_beam", now - 8, 30.0, target_id=8, particle=3)
    log.write("failure", now - 5, 0.0, target_id=8, particle=3, outcome="failed", failure_kind="outside_limits",
              reason="the target maps outside the stage limits")
    text = build_report(tmp_path)
    parser = check_report(text, {"target 7": f"{stored.file}::/{stored.entry}"})
    words = " ".join(parser.text)
    assert "failed (outside_limits)" in words and "the target maps outside the stage limits" in words
    budget = time_budget(find_records(tmp_path))
    assert budget["scanning"] == 4.0 and budget["moving + bookkeeping"] == 1.5 and budget["waiting for beam"] == 30.0
