"""The product, end to end: SEM image to X-ray scans on every isolated particle, scored
against the simulation's truth, plus the safety refusals and the resume after a crash."""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clients.door import DoorClient, MacroFailed
from clients.launcher import Stack
from clients.workflow import Inputs, WorkflowOptions, prepare_inputs, run_workflow, score
from macros.smart_calls import TangoThread
from macros.smart_support import mesh_points
from tests.tango_helpers import stack_proxy

SEED = 11

# A hang guard, not a speed target: the whole workflow through the Door takes ~3 min on an idle
# 2-core machine and was measured at up to ~7 min (407 s) on a loaded one.
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def workflow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Inputs, Path]]:
    out = tmp_path_factory.mktemp("workflow")
    inputs = prepare_inputs(out, SEED)
    stack = Stack(out / "stack", beamline=inputs.beamline, echo=False)
    try:
        stack.up()
        yield stack, inputs, out
    finally:
        stack.down(quiet=True)


def _door(stack: Stack) -> DoorClient:
    return DoorClient(f"tango://{stack.tango_host}/smart/door/01")


def test_complete_workflow_puts_the_beam_on_the_particles(workflow_stack) -> None:
    stack, inputs, out = workflow_stack
    # one drift check in the loop; the virtual beamline's SEM-to-camera rotation is within
    # +-17 deg by construction (mount 4, camera 3, SEM scan rotation 10)
    options = WorkflowOptions(particles=3, fine_particles=4, drift_every=2, rotation_range_deg=(-20.0, 20.0))
    said: list[str] = []
    run_workflow(stack.tango_host, inputs, out, options, echo=lambda stream, line: said.append(line))
    summary = score(out, inputs)
    assert summary["particles_visited"] == 3
    assert summary["scanned"] == 3
    # each detected particle is a real one (SEM position within 50 nm of a true particle)
    assert all(r["detection_error_um"] < 0.05 for r in summary["particles"])
    assert summary["coarse_within_1um"] >= 0.95, summary
    assert summary["fine_within_100nm"] >= 0.95, summary
    assert summary["overhead_s_max"] <= 1.0, summary
    # the drift check searched only near the rotation smart_register found
    drift = [line for line in said if line.startswith("drift check (rotations ")]
    assert drift, said
    assert any(line.startswith("registration (rotations -20.0 to 20.0 deg): rotation") for line in said), said
    rows = list(csv.DictReader((out / "visits.csv").open()))
    for column in ("index", "sem_x_px", "sem_y_px", "coarse_x", "coarse_y", "target_x", "target_y",
                   "ce_center_x", "ce_center_y", "scan_file", "scan_entry"):
        assert all(row[column] != "" for row in rows), column
    check_scan_files(out, rows)
    # the morning report of this run, from its files only
    from clients.report import write_report
    from tests.system.test_report import check_report

    report = write_report(out)
    check_report(report.read_text(), {f"particle {row['index']}": f"{row['scan_file']}::/{row['scan_entry']}"
                                      for row in rows})


def check_scan_files(out: Path, rows: list[dict[str, str]]) -> None:
    """Every map is in Sardana's HDF5 file, in the entry the visit log names, with the particle's
    index, region, reference position and stage target next to it; the fine alignment's too."""
    import h5py

    from clients.scandata import particle_maps, read_scans

    assert not (out / "maps").exists()  # no home-made map files any more
    for row in rows:
        with h5py.File(row["scan_file"], "r", locking=False) as handle:
            entry = handle[row["scan_entry"]]
            smart = entry["smart"]
            assert smart["role"][()].decode() == "particle_scan"
            assert smart["particle_index"][()] == int(row["index"])
            assert smart["region"][()].decode() == "sem" and smart["frame"][()].decode() == "sem"
            assert list(smart["reference_position_px"][()]) == pytest.approx(
                [float(row["sem_x_px"]), float(row["sem_y_px"])])
            assert list(smart["target_position"][()]) == pytest.approx(
                [float(row["target_x"]), float(row["target_y"])])
            assert smart["stage_unit"][()].decode() == "mm"
            # the mesh sized by the target's uncertainty, at most +-0.3 um (13 x 13 at 50 nm), as recorded
            half_width_um = float(smart["half_width_um"][()])
            assert 0.15 <= half_width_um <= 0.3 and float(row["half_width_um"]) == pytest.approx(half_width_um)
            assert entry["measurement/xrf_ce"].shape == (mesh_points(half_width_um, 0.05),)
            assert "end_time" in entry
    scans = read_scans(out / "scans")
    maps = particle_maps(scans)
    assert sorted(maps) == sorted(int(row["index"]) for row in rows)
    assert all(np.isfinite(m.grid()[2]).all() for m in maps.values())
    fine = [s for s in scans if s.role == "fine_alignment_centre"]
    assert len(fine) >= 2 and all(s.index is not None and s.target is not None for s in fine)
    events = [json.loads(line) for line in (out / "smart_events.jsonl").read_text().splitlines()]
    drift = [e for e in events if e["kind"] == "drift_check"]
    assert drift and all(e["success"] and len(e["drift_position"]) == 2 for e in drift), drift
    assert any(e["kind"] == "align" and e["step"] == "smart_fine_align" and e["model"] in
               ("translation", "similarity", "affine") for e in events), events
    # every particle scan says how it was sized and how much of its time was exposure; every
    # scanned particle updated the drift estimate, in which the fine alignment had anchored its
    # frame and measured the drift probe again
    scans = [e for e in events if e["kind"] == "scan"]
    assert len(scans) == len(rows) and all(0 < e["exposing_fraction"] < 1 and e["points"] > 0 for e in scans)
    assert any(e["kind"] == "drift" and e.get("why") == "probe" for e in events)
    drift = [e for e in events if e["kind"] == "drift" and e.get("why") != "probe"]
    assert len(drift) == sum(row["outcome"] == "scanned" for row in rows)
    assert all(len(e["estimate_um"]) == 2 and e["sigma_um"] > 0 for e in drift)
    assert any(e["kind"] == "drift_reset" and e["why"] == "smart_fine_align" for e in events)


def test_goto_outside_the_limits_is_refused_and_nothing_moves(workflow_stack) -> None:
    stack, _, _ = workflow_stack
    samx, samy = stack_proxy(stack, "samx"), stack_proxy(stack, "samy")
    before = (samx.Position, samy.Position)
    with _door(stack) as door, pytest.raises(MacroFailed, match="SMART_Unsafe"):
        door.run("smart_goto_xy stage 50.0 0.0", timeout_s=60)
    assert (samx.Position, samy.Position) == pytest.approx(before, abs=1e-9)


def test_registration_in_doubt_is_not_stored(workflow_stack, tmp_path: Path) -> None:
    stack, _, _ = workflow_stack
    mapper = stack_proxy(stack, "smart/coordmapper/1")
    before = json.loads(mapper.Transforms)
    # a micrograph of something else entirely (generated samples share their marker layout,
    # so another seed's SEM image would rightly register)
    from skimage import data

    from simulation.tiffio import write_tiff

    unrelated = tmp_path / "unrelated.tif"
    write_tiff(unrelated, np.tile(data.brick(), (4, 4)).astype(np.uint16) * 64, 0.02)
    with _door(stack) as door, pytest.raises(MacroFailed, match="in doubt"):
        door.run(f"smart_register {unrelated} similarity sem", timeout_s=300)
    assert json.loads(mapper.Transforms)["edges"] == before["edges"]


def test_a_name_the_environment_cannot_keep_is_refused_before_anything_is_stored(workflow_stack) -> None:
    """A double quote in a path would come back from a facility's Tango database as broken
    JSON (tests/facility/test_database_differences.py) and fail every later macro: refused
    first, the stored registration and environment stay, the next call works."""
    stack, inputs, out = workflow_stack
    mapper = stack_proxy(stack, "smart/coordmapper/1")
    before = json.loads(mapper.Transforms)
    quoted = out / 'sem"copy.tif'
    quoted.write_bytes(Path(inputs.sem).read_bytes())
    with _door(stack) as door:
        with pytest.raises(MacroFailed, match="SMART_BadArgument: the reference image's path holds a double quote"):
            door.run(["smart_register", str(quoted), "similarity", "sem"], timeout_s=300)
        with pytest.raises(MacroFailed, match="SMART_BadArgument: the image's path holds a double quote"):
            door.run(["smart_find_particles", str(quoted)], timeout_s=120)
        assert json.loads(mapper.Transforms)["edges"] == before["edges"]
        found = door.run("smart_find_particles", timeout_s=120)  # the stored reference image, read back
    assert f"found on {Path(inputs.sem).name}" in found.text(("Output",)), found.lines


def test_resume_after_a_macroserver_crash_scans_every_particle_once(workflow_stack) -> None:
    stack, _, out = workflow_stack
    log = out / "resume.csv"
    macro = "smart_scan_particles mesh 0.2 0.05 0.01 True 4"
    with _door(stack) as door:
        door.run(f"senv SmartScanLog {log}", timeout_s=30)
        door.run("senv SmartDriftEvery 0", timeout_s=30)
    crashed = threading.Event()

    def run_until_killed() -> None:
        try:
            with _door(stack) as door:
                door.run(macro, timeout_s=300)
        except Exception:  # noqa: BLE001 - the MacroServer dies under it, as intended
            crashed.set()

    runner = TangoThread(target=run_until_killed, daemon=True)
    runner.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 2:  # header + one finished particle
            break
        time.sleep(0.2)
    else:
        pytest.fail("no particle finished within 120 s")
    stack.restart("MacroServer/smart", kill=True)
    runner.join(timeout=60)
    # the Pool may still finish the interrupted motion or count; wait for the Door to be free
    with _door(stack) as door:
        for _ in range(100):
            if not door.is_busy():
                break
            time.sleep(0.1)
        door.run(macro, timeout_s=600)
    rows = list(csv.DictReader(log.open()))
    counts = Counter(row["index"] for row in rows)
    assert len(counts) == 4, counts
    assert all(n == 1 for n in counts.values()), f"particles logged more than once: {counts}"
    assert all(row["outcome"].startswith("scanned") for row in rows)
    assert os.path.getsize(log) > 0


def test_a_drift_step_is_found_tracked_and_corrected(workflow_stack) -> None:
    """The sample steps by 0.5 um against the mapping (here: the refined sem -> stage edge is
    moved by 0.5 um, which is what the X-rays then see): the first particle's sized mesh
    (+-0.15 um) misses it, the search mesh finds it, the drift estimate jumps there, the loop
    re-registers to the camera and scans it again; the next particles are corrected and put in
    the beam within 100 nm of their true positions (scored against the simulation's truth)."""
    stack, inputs, out = workflow_stack
    mapper = stack_proxy(stack, "smart/coordmapper/1")
    edge = next(e for e in json.loads(mapper.Transforms)["edges"] if {e["from"], e["to"]} == {"sem", "stage"})
    assert edge["from"] == "sem" and edge["covariance"] is not None
    step_mm = np.array([0.0005, 0.0])
    shifted = np.array(edge["matrix"])
    shifted[:2, 2] += step_mm
    run_dir = out / "drift_step"
    run_dir.mkdir()

    def store(matrix: np.ndarray) -> None:
        mapper.SetTransform(json.dumps({"from": "sem", "to": "stage", "matrix": matrix.tolist(),
                                        "covariance": edge["covariance"], "from_unit": "px"}))
    store(shifted)
    try:
        with _door(stack) as door:
            door.run(f"senv SmartScanLog {run_dir / 'visits.csv'}", timeout_s=30)
            door.run("senv SmartDriftEvery 0", timeout_s=30)
            door.run("usenv SmartScanProgress", timeout_s=30)  # the same 3 particles as the first test
            door.run("smart_scan_particles mesh 0.3 0.05 0.01 True 3", timeout_s=900)
    finally:
        store(np.array(edge["matrix"]))
        with _door(stack) as door:
            door.run("usenv SmartDriftState", timeout_s=30)
    rows = list(csv.DictReader((run_dir / "visits.csv").open()))
    assert [row["outcome"] for row in rows] == ["scanned"] * 3, rows
    assert "search mesh" in rows[0]["message"]
    events = [json.loads(line) for line in (run_dir / "smart_events.jsonl").read_text().splitlines()]
    drift = [e for e in events if e["kind"] == "drift"]
    jumps = [e for e in drift if e["jump"]]
    assert len(jumps) == 1, drift
    # the particles are 0.5 um *before* where the shifted mapping says: the estimate is -0.5 um in x
    assert drift[-1]["estimate_um"] == pytest.approx([-0.5, 0.0], abs=0.06)
    assert [e["why"] for e in events if e["kind"] == "realign"] == ["no_signal", "drift_jump"]
    assert any(e["kind"] == "drift_check" and e["success"] for e in events)
    summary = score(run_dir, inputs)
    errors = [p["fine_error_um"] for p in summary["particles"]]
    assert all(error < 0.1 for error in errors), errors  # each put in the beam where the estimate says


def test_fine_alignment_refuses_another_samples_particles(workflow_stack, tmp_path: Path) -> None:
    """An SEM image of another sample with the same markers: the camera registration cannot
    tell (docs/registration.md), so its particles are detected and mapped through the right
    marker geometry onto places where this sample has none. The X-ray maps then find nothing
    (here: 0 of the 4 it tries) or unrelated particles (the offset-scatter rule, unit-tested in
    tests/unit/macros), and the fine alignment must refuse without storing anything. Two
    particles searched over +-0.7 um (it tries up to twice as many when they are not found): the
    refusal is the same as with the defaults and takes a quarter of the scans (39 s instead of
    213). Runs after the complete workflow above, on its camera calibration, registration and
    particle settings (the module's stack is shared)."""
    from simulation.config import default_beamline
    from simulation.sem import render_sem
    from simulation.tiffio import write_tiff

    stack, inputs, _ = workflow_stack
    other = default_beamline(SEED + 100)
    image = render_sem(other.sample, other.sem, seed=SEED + 100)
    other_sem = tmp_path / "other_sample_sem.tif"
    write_tiff(other_sem, image.image, other.sem.pixel_size_um, {"modality": "SEM", "seed": SEED + 100})
    mapper = stack_proxy(stack, "smart/coordmapper/1")
    with _door(stack) as door:
        door.run(f"smart_find_particles {other_sem}", timeout_s=120)
        before = json.loads(mapper.Transforms)
        with pytest.raises(MacroFailed, match="SMART_Unsafe"):
            door.run("smart_fine_align 2 0.7 0.01", timeout_s=600)
        door.run(f"smart_find_particles {inputs.sem}", timeout_s=120)  # leave the right detections
    assert json.loads(mapper.Transforms)["edges"] == before["edges"]
