"""Working by hand against the session stack: what `smart up` prepared, the beam commands,
and the console bugs (goto after an exact fit, targets outside or with unknown limits, a
pasteable gen_scan, the scan loop without a scan folder)."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest

from clients import cli
from clients.door import DoorClient, MacroFailed
from clients.launcher import Stack
from macros.smart_calls import position_range
from tests.system.conftest import device_trl
from tests.tango_helpers import stack_proxy

EXACT = "exact3"
"""A frame of this test only, with an exact affine to the stage (3 pairs), removed afterwards."""


def _door(stack: Stack) -> DoorClient:
    return DoorClient(device_trl(stack, "smart/door/01"))


def _smart(capsys: pytest.CaptureFixture[str], stack: Stack, *words: str) -> tuple[int, str, str]:
    code = cli.main([*words, "--tango-host", stack.tango_host])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _stage(stack: Stack) -> np.ndarray:
    return np.array([float(stack_proxy(stack, name).Position) for name in ("samx", "samy")])


@pytest.fixture()
def exact_frame(stack: Stack) -> Iterator[np.ndarray]:
    """``exact3 -> stage`` fitted from exactly 3 pairs (affine): no uncertainty left. The frame's
    pixel (100, 100) sits 2 um from where the stage is now; 1 px = 10 nm."""
    here = _stage(stack)
    mapper = stack_proxy(stack, "smart/coordmapper/1")
    pairs = [[x, y, here[0] + 0.002 + (x - 100) * 1e-5, here[1] + (y - 100) * 1e-5]
             for x, y in ((0.0, 0.0), (1000.0, 0.0), (0.0, 1000.0))]
    fit = json.loads(mapper.FitTransform(json.dumps({"from": EXACT, "to": "stage", "pairs": pairs, "model": "affine",
                                                     "from_unit": "px"})))
    assert fit["rms"] == pytest.approx(0.0, abs=1e-12)
    try:
        yield here
    finally:
        mapper.RemoveFrame(EXACT)


def test_goto_after_an_exact_fit_moves_and_says_there_is_no_uncertainty(stack: Stack, exact_frame, capsys) -> None:  # noqa: ANN001
    with _door(stack) as door:
        run = door.run(f"smart_goto_xy {EXACT} 100 100", timeout_s=120)
    said = run.text(("Output",))
    assert "exact fit, so no uncertainty estimate" in said, said
    assert _stage(stack) == pytest.approx(exact_frame + [0.002, 0.0], abs=2e-6)
    code, out, err = _smart(capsys, stack, "goto", "--frame", EXACT, "100", "100")
    assert code == 0, err
    assert "stage at samx" in out and " mm" in out
    code, out, err = _smart(capsys, stack, "map", EXACT, "stage", "100", "100")
    assert code == 0 and "exact fit, so no uncertainty estimate; within the stage limits" in out, out + err


def test_target_outside_the_configured_limits_is_refused(stack: Stack, exact_frame, capsys) -> None:  # noqa: ANN001
    config = stack_proxy(stack, "samx").get_attribute_config("Position")
    assert (config.min_value, config.max_value, config.unit) == ("-11.5", "11.5", "mm")
    before = _stage(stack)
    with _door(stack) as door, pytest.raises(MacroFailed) as refused:
        door.run(f"smart_goto_xy {EXACT} 1e7 1e7", timeout_s=60)
    text = "\n".join(line for _, line in refused.value.lines)
    assert "SMART_Unsafe: samx target" in text and "outside its limits [-11.5, 11.5] mm; nothing moved" in text
    assert _stage(stack) == pytest.approx(before, abs=1e-9)
    code, out, err = _smart(capsys, stack, "map", EXACT, "stage", "1e7", "1e7")
    assert code == 0 and "NOT within the stage limits" in out and "within the stage limits" not in \
        out.replace("NOT within the stage limits", ""), out
    code, out, err = _smart(capsys, stack, "goto", "--frame", "stage", "50", "0")
    assert code == 1 and err.strip().startswith("smart goto: SMART_Unsafe: samx target 50.000000 mm is outside"), err
    assert _stage(stack) == pytest.approx(before, abs=1e-9)


@contextlib.contextmanager
def _without_limits(stack: Stack, motor: str) -> Iterator[None]:
    proxy = stack_proxy(stack, motor)
    config = proxy.get_attribute_config("Position")
    saved = (config.min_value, config.max_value)
    config.min_value = config.max_value = "Not specified"
    proxy.set_attribute_config(config)
    try:
        yield
    finally:
        config = proxy.get_attribute_config("Position")
        config.min_value, config.max_value = saved
        proxy.set_attribute_config(config)


def test_without_limits_nothing_moves_and_nothing_is_within(stack: Stack, exact_frame, capsys) -> None:  # noqa: ANN001
    before = _stage(stack)
    with _without_limits(stack, "samy"):
        with _door(stack) as door, pytest.raises(MacroFailed) as refused:
            door.run(f"smart_goto_xy {EXACT} 100 100", timeout_s=60)  # 2 um away: harmless, still refused
        text = "\n".join(line for _, line in refused.value.lines)
        assert "SMART_Unsafe: the limits of samy are unknown" in text and "nothing moved" in text, text
        assert _stage(stack) == pytest.approx(before, abs=1e-9)
        code, out, err = _smart(capsys, stack, "map", EXACT, "stage", "100", "100")
        assert code == 0 and "NOT within the stage limits" in out and "limits are unknown" in out, out + err
        code, out, err = _smart(capsys, stack, "goto", "--frame", EXACT, "100", "100")
        assert code == 1 and "SMART_Unsafe: the limits of samy are unknown" in err, err
    assert _stage(stack) == pytest.approx(before, abs=1e-9)


def test_the_macros_read_limits_from_taurus_including_one_set_just_before(stack: Stack) -> None:
    """``position_range`` on a real Taurus Position attribute of samy (the macros get the same
    attribute from ``getMotor(name).getPositionObj()``): numbers in the motor's unit, and a
    limit changed from outside an instant before is what the next read gives."""
    import taurus

    device = stack_proxy(stack, "samy").dev_name()
    position = taurus.Attribute(f"tango://{stack.tango_host}/{device}/Position")
    motor = SimpleNamespace(getPositionObj=lambda: position)
    assert position_range(motor, "samy") == (-11.5, 11.5, "mm")
    with _without_limits(stack, "samy"):
        assert position_range(motor, "samy") == (-math.inf, math.inf, "mm")
    assert position_range(motor, "samy") == (-11.5, 11.5, "mm")


def test_gen_scan_prints_a_command_the_door_runs(stack: Stack, exact_frame) -> None:  # noqa: ANN001
    with _door(stack) as door:
        run = door.run(f"smart_gen_scan {EXACT} 100 100 120 120 0.1 0.01", timeout_s=60)
        command = run.text(("Output",)).splitlines()[0]
        words = command.split()
        assert words[0] == "mesh" and "np." not in command and len(words) == 10, command
        # 20 px = 200 nm at 0.1 um: 2 intervals per axis; positions to 1 nm in mm
        assert words[4] == words[8] == "2"
        assert all(len(w.split(".")[1]) == 6 for w in (words[2], words[3], words[6], words[7])), command
        scan = door.run(words, timeout_s=120)  # parsed back by the MacroServer as the mesh macro
    rows = [line for line in scan.text(("Output",)).splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 9, scan.text()


def test_scan_loop_refuses_to_start_without_a_scan_folder(stack: Stack) -> None:
    scans = stack.run_dir / "scans"
    assert scans.is_dir()  # `smart up` made the ScanDir of the Sardana configuration
    with _door(stack) as door:
        assert f"scans stored in: {scans / 'smart_scans.h5'}" in door.run("smart").text(("Output",))
        door.run("usenv ScanDir")
        try:
            assert "scans are NOT stored" in door.run("smart").text(("Output",))
            with pytest.raises(MacroFailed) as refused:
                door.run("smart_scan_particles mesh 0.3 0.05 0.01 True 1", timeout_s=60)
            text = "\n".join(line for _, line in refused.value.lines)
            assert "SMART_NotReady: ScanDir/ScanFile are not set" in text and "SmartAllowUnsavedScans" in text
        finally:
            door.run(["senv", "ScanDir", str(scans)])


def test_lsmac_smart_finds_the_overview_macro(stack: Stack) -> None:
    # lsmac matches whole names (^smart$): the overview macro is named `smart` for that reason
    with _door(stack) as door:
        listed = door.run("lsmac smart").text(("Output",))
        overview = door.run("smart").text(("Output",))
    assert "macros/smart_macros.py" in listed and "No macrocodes defined" not in listed, listed
    assert "smart_beam_calibrate" in overview and "smart_particle_profile" in overview


def test_up_prepared_the_session_for_working_by_hand(stack: Stack) -> None:
    state = json.loads((stack.run_dir / "stack.json").read_text())["session"]
    assert state["sem_image"] == str(stack.run_dir / "sem.tif") and (stack.run_dir / "sem.tif").stat().st_size > 0
    env_sh = (stack.run_dir / "env.sh").read_text()
    assert f"export TANGO_HOST={stack.tango_host}" in env_sh
    assert f"export IPYTHONDIR={stack.run_dir / 'ipython'}" in env_sh
    profile = (stack.run_dir / "ipython" / "profile_smart" / "ipython_config.py").read_text()
    assert f'config.Spock.door_name = "tango://{stack.tango_host}/smart/door/01"' in profile
    assert f'config.Spock.macro_server_name = "tango://{stack.tango_host}/smart/macroserver/1"' in profile


def test_beam_position_is_set_and_shown_from_the_cli(stack: Stack, capsys) -> None:  # noqa: ANN001
    mapper = stack_proxy(stack, "smart/coordmapper/1")
    code, out, err = _smart(capsys, stack, "beam", "set", "1000.25", "990.5")
    assert code == 0 and "beam position: camera pixel (1000.25, 990.50)" in out, out + err
    assert list(mapper.BeamPosition) == [1000.25, 990.5]
    code, out, err = _smart(capsys, stack, "beam", "set", "center")
    camera = stack_proxy(stack, "smart/camera/1")
    centre = ((camera.Width - 1) / 2.0, (camera.Height - 1) / 2.0)
    assert code == 0 and f"camera pixel ({centre[0]:.2f}, {centre[1]:.2f})" in out, out + err
    code, out, err = _smart(capsys, stack, "beam", "set", "left")
    assert code == 1 and err.startswith("smart beam: SMART_BadArgument:"), err
    code, out, err = _smart(capsys, stack, "beam")
    assert code == 0 and out.strip() == f"beam position: camera pixel ({centre[0]:.2f}, {centre[1]:.2f})"


def test_particle_profile_is_applied_by_name(stack: Stack, capsys) -> None:  # noqa: ANN001
    particles = stack_proxy(stack, "smart/particles/1")
    code, out, err = _smart(capsys, stack, "particles", "--profile", "ceo2_50nm", "--show")
    assert code == 0 and "particle profile 'ceo2_50nm' applied" in out, out + err
    assert particles.Diameter == 7 and particles.IsolationRadius == pytest.approx(100.0)
    code, out, err = _smart(capsys, stack, "particles", "--profile", "no_such", "--show")
    assert code == 1 and "SMART_NotFound: no particle profile 'no_such' (known: ceo2_50nm" in err, err
