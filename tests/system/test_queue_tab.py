"""The Queue tab's pure parts: the live map built from the Door's RecordData packets, the
queue's summary and status lines, the scan text.

System tier because clients/gui/queue_tab.py is a Tango client (it imports tango), not because a
device runs."""

from __future__ import annotations

import json
import math

import numpy as np

from clients.gui.queue_tab import LiveScan, QueueSnapshot, decode_record_packet, scan_text

DESC = {"type": "data_desc", "data": {
    "title": "mesh samx 0.1 0.2 2 samy 0.5 0.6 2 0.01", "serialno": 41, "total_scan_intervals": 8,
    "ref_moveables": ["samx"],  # as Sardana's mesh sends it: the first motor only
    "column_desc": [{"name": "point_nb", "label": "#Pt No"}, {"name": "samx", "label": "samx", "is_reference": True},
                    {"name": "samy", "label": "samy", "is_reference": False},
                    {"name": "tango://h:1/expchan/xrf_ctrl/2", "label": "xrf_ce"},
                    {"name": "tango://h:1/expchan/xrf_ctrl/1", "label": "xrf_t"}]}}


def packet(kind: str, data: dict) -> tuple[str, bytes]:
    return "utf8_json", json.dumps({"type": kind, "data": data}).encode()


def test_live_map_fills_point_by_point_and_restarts_with_the_next_scan() -> None:
    live = LiveScan("xrf_ce")
    live.feed(decode_record_packet(packet("data_desc", DESC["data"])))
    assert live.expected == 9 and "0/9 points" in live.progress_text()
    for n, (x, y) in enumerate([(0.1, 0.5), (0.15, 0.5), (0.2, 0.5), (0.1, 0.55)]):
        live.feed({"type": "record_data", "data": {"point_nb": n, "samx": x, "samy": y,
                                                    "tango://h:1/expchan/xrf_ctrl/2": 10.0 * (n + 1),
                                                    "tango://h:1/expchan/xrf_ctrl/1": 1.0}})
    xs, ys, image = live.image()
    assert list(xs) == [0.1, 0.15, 0.2] and list(ys) == [0.5, 0.55]
    assert list(image[0]) == [10.0, 20.0, 30.0] and image[1, 0] == 40.0 and np.isnan(image[1, 1])
    assert "scan 41: 4/9 points" in live.progress_text()
    live.feed({"type": "record_end", "data": {}})
    assert "(ended)" in live.progress_text()
    live.feed(DESC)
    assert live.image()[2].size == 0  # a new scan starts an empty map


def test_a_scan_without_the_channel_says_so_and_bad_packets_are_ignored() -> None:
    live = LiveScan("xrf_pt")
    live.feed(DESC)
    live.feed({"type": "record_data", "data": {"samx": 1.0}})
    assert "no 'xrf_pt' column" in live.progress_text()
    assert decode_record_packet(("pickle", b"...")) is None and decode_record_packet(("utf8_json", b"{")) is None
    assert "senv JsonRecorder True" in LiveScan().progress_text()


def test_summary_status_and_scan_text() -> None:
    snap = QueueSnapshot(counts={"pending": 2, "running": 1, "done": 4, "failed": 1, "skipped": 0, "total": 8},
                         activity={"activity": "waiting_for_beam", "message": "ring current 0.0 mA < 10 mA"})
    assert snap.summary() == "8 targets: 2 pending, 1 running, 4 done, 1 failed, 0 skipped"
    assert snap.finished == 5 and snap.status() == "waiting for beam: ring current 0.0 mA < 10 mA"
    snap.paused, snap.pause_reason = True, "paused from smart-gui"
    assert snap.status().startswith("paused: paused from smart-gui")
    assert scan_text({"macro": "mesh", "half_width_um": 0.3, "step_um": 0.05, "exposure": 0.01}) == \
        "mesh ±0.3 µm, 50 nm, 10 ms"
    assert math.isnan(QueueSnapshot().time_left_s)
