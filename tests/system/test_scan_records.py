"""The SMART metadata goes into the scan's own entry through Sardana's own NXscan HDF5 recorder
(its custom-data API), and the readers find the map and the metadata there.

Sardana's recorder and scan-data classes are driven here without a MacroServer, as its scan
framework drives them: start the record list, add one record per mesh point, end it.

System tier because Sardana's recorders import tango, not because a device runs."""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from clients.scandata import grid, particle_maps, read_scans
from macros import smart_records


def sardana_mesh(path: Path, serialno: int, centre: tuple[float, float], peak: tuple[float, float],
                 n: int = 7, step: float = 5e-5):
    """A finished ``mesh samx .. samy .. xrf_ce`` recorded by Sardana's NXscanH5_FileRecorder;
    returns an object shaped like the mesh macro execMacro returns (``_gScan.data_handler``)."""
    from sardana.macroserver.recorders.h5storage import NXscanH5_FileRecorder
    from sardana.macroserver.scan.recorder.datarecorder import DataHandler
    from sardana.macroserver.scan.scandata import ColumnDesc, MoveableDesc, ScanData

    handler = DataHandler()
    handler.addRecorder(NXscanH5_FileRecorder(filename=str(path)))
    now = datetime.datetime.now()
    env = {"serialno": serialno, "title": f"mesh samx ... samy ... {n - 1} 0.01", "user": "test",
           "scanstarttime": now, "starttime": now, "datadesc": [
               ColumnDesc(name="point_nb", label="#Pt No", dtype="int64"),
               MoveableDesc(moveable=SimpleNamespace(getName=lambda: "samx", instrument=None)),
               MoveableDesc(moveable=SimpleNamespace(getName=lambda: "samy", instrument=None)),
               ColumnDesc(name="tango://h:1/expchan/xrf/1", label="xrf_ce")]}
    data = ScanData(environment=env, data_handler=handler)
    data.start()
    offsets = (np.arange(n) - (n - 1) / 2) * step
    number = 0
    for y in centre[1] + offsets:
        for x in centre[0] + offsets:
            counts = 10 + 1000 * math.exp(-((x - peak[0]) ** 2 + (y - peak[1]) ** 2) / (2 * (4e-5) ** 2))
            data.addRecord({"point_nb": number, "samx": x, "samy": y, "tango://h:1/expchan/xrf/1": counts})
            number += 1
    env["endtime"] = datetime.datetime.now()
    data.end()
    return SimpleNamespace(_gScan=SimpleNamespace(data_handler=handler))


def test_particle_metadata_goes_into_the_scans_own_entry_and_is_read_back(tmp_path: Path) -> None:
    file = tmp_path / "scans.h5"
    scan = sardana_mesh(file, 12, (0.5, 0.9), (0.50002, 0.89998))
    metadata = smart_records.scan_metadata(
        smart_records.ROLE_PARTICLE, particle_index=37, frame="sem", reference_xy=[1234.5, 876.25],
        target=[0.5, 0.9], stage_unit="mm", motors=["samx", "samy"], channel="xrf_ce", region="A",
        coarse_target=[0.50003, 0.90001], measured_centre_position=[0.50002, 0.89998], outcome="scanned",
        isolated=True, settings={"Diameter": 7})
    record = smart_records.annotate_scan(scan, metadata)
    assert (record.file, record.entry, record.problems) == (str(file), "entry12", [])
    with h5py.File(file, "r") as handle:  # the plain h5py view a facility tool has
        smart = handle["entry12/smart"]
        assert smart.attrs["NX_class"] == "NXcollection"
        assert smart["particle_index"][()] == 37
        assert smart["region"][()].decode() == "A" and smart["frame"][()].decode() == "sem"
        assert list(smart["reference_position_px"][()]) == [1234.5, 876.25]
        assert list(smart["target_position"][()]) == [0.5, 0.9]
        assert smart["isolated"][()] == 1
        assert json.loads(smart["settings"][()]) == {"Diameter": 7}
        assert handle["entry12/measurement/xrf_ce"].shape == (49,)
        assert "end_time" in handle["entry12"]
    scans = read_scans(tmp_path)
    assert [(s.entry, s.index, s.role, s.complete) for s in scans] == [("entry12", 37, "particle_scan", True)]
    x, y, image = scans[0].grid()
    assert image.shape == (7, 7) and np.isfinite(image).all()
    row, col = np.unravel_index(np.argmax(image), image.shape)
    assert abs(x[col] - 0.50002) <= 2.5e-5 and abs(y[row] - 0.89998) <= 2.5e-5  # the peak where it was put
    assert scans[0].location == f"{file}::/entry12"


def test_a_key_written_twice_keeps_the_first_value(tmp_path: Path) -> None:
    scan = sardana_mesh(tmp_path / "scans.h5", 3, (0.0, 0.0), (0.0, 0.0), n=3)
    smart_records.annotate_scan(scan, {"outcome": "scanned"})
    again = smart_records.annotate_scan(scan, {"outcome": "failed"})
    assert again.entry == "entry3"
    with h5py.File(tmp_path / "scans.h5", "r") as handle:
        assert handle["entry3/smart/outcome"][()].decode() == "scanned"


def test_the_newest_complete_particle_scan_wins(tmp_path: Path) -> None:
    file = tmp_path / "scans.h5"
    for serialno, role in ((1, smart_records.ROLE_FINE_SEARCH), (2, smart_records.ROLE_PARTICLE),
                           (3, smart_records.ROLE_PARTICLE)):
        scan = sardana_mesh(file, serialno, (0.0, 0.0), (0.0, 0.0), n=3)
        smart_records.annotate_scan(scan, {"role": role, "particle_index": 4, "motors": "samx,samy",
                                           "channel": "xrf_ce"})
    maps = particle_maps(read_scans(file))
    assert list(maps) == [4] and maps[4].entry == "entry3"


def test_a_scan_without_a_file_recorder_is_reported_as_not_stored() -> None:
    record = smart_records.annotate_scan(SimpleNamespace(_gScan=SimpleNamespace(data_handler=None)), {"a": 1})
    assert record == smart_records.ScanRecord(None, None, [])


def test_event_log_lines_are_complete_json_and_kinds_are_checked(tmp_path: Path) -> None:
    log = smart_records.EventLog(smart_records.events_path(str(tmp_path / "visits.csv")))
    log.write("wait_beam", 1000.0, 12.5, reason="ring current 0.0 mA < 10 mA", level=float("nan"))
    log.write("drift_check", 1020.0, 3.0, drift_position=np.array([1e-5, -2e-5]))
    lines = (tmp_path / "smart_events.jsonl").read_text().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["kind"] == "wait_beam" and first["duration_s"] == 12.5 and first["level"] is None
    assert second["drift_position"] == [1e-5, -2e-5]
    with pytest.raises(ValueError, match="not one of"):
        log.write("nap", 0.0, 1.0)


def test_grid_leaves_points_not_yet_measured_empty() -> None:
    xs, ys, image = grid(np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]), np.array([5.0, 6.0, 7.0]))
    assert image.shape == (2, 2) and image[0, 0] == 5 and image[0, 1] == 6 and image[1, 0] == 7
    assert np.isnan(image[1, 1])
