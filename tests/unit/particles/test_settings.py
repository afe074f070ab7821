"""Settings and Detect-argument validation: refusals name the setting and the fix."""

from __future__ import annotations

import numpy as np
import pytest

from servers.common.errors import BadArgument
from servers.common.jsonargs import parse_args
from servers.ParticleDS import DetectArgs, ParticleCore, ParticleSettings
from servers.ParticleDS.settings import SETTING_NAMES


def test_defaults_are_valid_and_named_like_the_tango_attributes() -> None:
    settings = ParticleSettings()
    assert tuple(settings.model_dump()) == SETTING_NAMES
    assert settings.Diameter % 2 == 1
    assert settings.separation_px == settings.Diameter + 1
    assert settings.max_size_px is None


@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("Diameter", 12, "odd"),
    ("Diameter", 1, "Diameter"),
    ("MinMass", -1.0, "MinMass"),
    ("MaxSize", -0.5, "MaxSize"),
    ("Separation", -3, "Separation"),
    ("Separation", 1e-300, "at least 1 px"),
    ("Separation", 0.5, "at least 1 px"),
    ("Threshold", -1, "Threshold"),
    ("Percentile", 100.0, "Percentile"),
    ("Percentile", -1, "Percentile"),
    ("NoiseSize", 11.0, "smaller than Diameter"),
    ("Method", "locate_fast", "Method"),
    ("Invert", "yes", "Invert"),
    ("IsolationRadius", float("nan"), "IsolationRadius"),
    ("Diameter", "9", "Diameter"),
])
def test_bad_setting_is_refused_and_nothing_changes(name: str, value: object, fragment: str) -> None:
    core = ParticleCore()
    before = core.settings
    with pytest.raises(BadArgument) as caught:
        core.set_setting(name, value)
    assert fragment in caught.value.desc
    assert core.settings == before


def test_even_diameter_message_suggests_odd_neighbours() -> None:
    with pytest.raises(BadArgument, match="use 11 or 13"):
        ParticleCore().set_setting("Diameter", 12)


def test_valid_setting_is_stored_and_numpy_scalars_accepted() -> None:
    core = ParticleCore()
    core.set_setting("Diameter", np.int64(9))
    core.set_setting("MinMass", np.float32(250.5))
    core.set_setting("Invert", np.bool_(True))
    assert core.get_setting("Diameter") == 9
    assert core.get_setting("MinMass") == pytest.approx(250.5)
    assert core.get_setting("Invert") is True


def test_cross_field_rule_sees_the_merged_values() -> None:
    core = ParticleCore({"Diameter": 5, "NoiseSize": 1.0})
    with pytest.raises(BadArgument):
        core.set_setting("NoiseSize", 5.0)
    core.update_settings({"Diameter": 15, "NoiseSize": 5.0})
    assert core.settings.NoiseSize == 5.0


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(BadArgument, match="unknown setting"):
        ParticleCore().set_setting("diameter", 9)
    with pytest.raises(BadArgument, match="unknown setting"):
        ParticleCore().get_setting("Radius")


def test_detect_argument_parses_overrides_and_roi() -> None:
    args = parse_args('{"path": "/data/sem.tif", "roi": [10, 20, 300, 200], "Diameter": 9, "Invert": true}',
                      DetectArgs)
    assert args.path == "/data/sem.tif"
    assert args.roi == [10, 20, 300, 200]
    assert args.overrides() == {"Diameter": 9, "Invert": True}


@pytest.mark.parametrize("text", [
    '{"path": "a.tif", "attribute": "smart/camera/1/Image"}',
    '{"roi": [1, 2, 3]}',
    '{"roi": [1, 2, 3, 4.5]}',
    '{"Diameter": 8}',
    '{"Diameter": "9"}',
    '{"MinMass": -5}',
    '{"Colour": "red"}',
    '{"path": ""}',
    '{"MinMass": NaN}',
    '{"channel": "Fe_Ka"}',
    '{"attribute": "a/b/c/Image", "channel": "Fe_Ka"}',
])
def test_bad_detect_argument_is_refused(text: str) -> None:
    with pytest.raises(BadArgument):
        parse_args(text, DetectArgs)


def test_detect_reads_an_edx_element_map_through_the_one_loader(tmp_path) -> None:
    """``channel`` reaches the image loader: a Bruker .bcf element map (a real file) as Detect's image."""
    import shutil
    from pathlib import Path

    from servers.ParticleDS import image_input

    bcf = Path(__file__).resolve().parents[2] / "data" / "vendor_images" / "test_TEM.bcf"
    shutil.copyfile(bcf, tmp_path / "map.bcf")
    args = parse_args('{"path": "%s", "channel": "Cu_Ka"}' % (tmp_path / "map.bcf"), DetectArgs)
    image = image_input.load_image(args.path, args.channel)
    assert image.shape == (64, 64) and image.max() > image.min()
