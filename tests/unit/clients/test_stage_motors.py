"""The stage motors are named once, in the stack YAML (``stage_motors``); the launcher gives them to
CameraDS, CoordMapperDS and the macros' environment, and refuses a second, different name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clients.launcher import DEFAULT_CONFIG, LaunchError, StackConfig, sardana_with_stage_motors


def _places(tmp_path: Path) -> dict[str, str]:
    return {"repo": str(tmp_path), "run": str(tmp_path / "run"), "beamline": str(tmp_path / "b.json")}


def _props(config: StackConfig, device: str) -> dict:
    return next(spec.devices[device][1] for spec in config.servers if device in spec.devices)


def test_the_project_yaml_names_the_motors_once_and_every_device_gets_them(tmp_path: Path) -> None:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    named = [(device, key) for classes in raw["servers"].values() for devices in classes.values()
             for device, props in devices.items() for key in (props or {})
             if key in ("StageMotors", "MotorX", "MotorY")]
    assert named == [], "the stage motors are named in stage_motors only"
    sardana = yaml.safe_load((DEFAULT_CONFIG.parent / "sardana.yaml").read_text())
    assert all("SmartMotors" not in server["environment"]["variables"] for server in sardana["macro_servers"].values())
    config = StackConfig.load(DEFAULT_CONFIG, _places(tmp_path))
    assert config.stage_motors == ["samx", "samy"]
    assert _props(config, "smart/camera/1")["StageMotors"] == ["samx", "samy"]
    assert (_props(config, "smart/coordmapper/1")["MotorX"], _props(config, "smart/coordmapper/1")["MotorY"]) \
        == ("samx", "samy")
    rendered = yaml.safe_load(sardana_with_stage_motors((DEFAULT_CONFIG.parent / "sardana.yaml").read_text(),
                                                        config.stage_motors))
    for server in rendered["macro_servers"].values():
        assert server["environment"]["variables"]["SmartMotors"] == ["samx", "samy"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stack.yaml"
    path.write_text(text)
    return path


def test_a_device_naming_other_motors_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "stage_motors: [samx, samy]\nservers:\n  CoordMapperDS/t:\n    CoordMapperDS:\n"
                            "      t/coordmapper/1: {MotorX: other}\n")
    with pytest.raises(LaunchError, match="MotorX"):
        StackConfig.load(path, _places(tmp_path))
    same = _write(tmp_path, "stage_motors: [samx, samy]\nservers:\n  CoordMapperDS/t:\n    CoordMapperDS:\n"
                            "      t/coordmapper/1: {MotorX: samx}\n")
    assert _props(StackConfig.load(same, _places(tmp_path)), "t/coordmapper/1")["MotorY"] == "samy"


@pytest.mark.parametrize("value", ["samx", "[samx]", "[samx, samy, samz]", "[samx, '']"])
def test_stage_motors_must_be_two_names(tmp_path: Path, value: str) -> None:
    path = _write(tmp_path, f"stage_motors: {value}\nservers:\n  CameraDS/t:\n    CameraDS:\n      t/camera/1: {{}}\n")
    with pytest.raises(LaunchError, match="stage_motors"):
        StackConfig.load(path, _places(tmp_path))


def test_without_stage_motors_the_devices_keep_their_own(tmp_path: Path) -> None:
    path = _write(tmp_path, "servers:\n  CameraDS/t:\n    CameraDS:\n      t/camera/1: {StageMotors: [a, b]}\n")
    config = StackConfig.load(path, _places(tmp_path))
    assert config.stage_motors is None and _props(config, "t/camera/1")["StageMotors"] == ["a", "b"]
    assert sardana_with_stage_motors("macro_servers: {}\n", None) == "macro_servers: {}\n"


def test_a_macroserver_naming_other_motors_is_refused() -> None:
    text = "macro_servers:\n  MS:\n    environment:\n      variables:\n        SmartMotors: [a, b]\n"
    with pytest.raises(LaunchError, match="SmartMotors"):
        sardana_with_stage_motors(text, ["samx", "samy"])
