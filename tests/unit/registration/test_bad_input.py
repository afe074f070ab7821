"""Bad input raises the right SMART error and loses nothing (slots and results intact)."""

from __future__ import annotations

import numpy as np
import pytest

import servers.common.imageio as imageio
from servers.common.errors import BadArgument, NotFound
from servers.common.jsonargs import parse_args
from servers.RegistrationDS.args import RegisterArgs, RegisterFiducialsArgs
from servers.RegistrationDS.core import RegistrationCore


@pytest.fixture()
def core(micrographs) -> RegistrationCore:
    core = RegistrationCore()
    core.put_image("ref", micrographs["camera"], 1.0, {})
    core.put_image("tgt", micrographs["camera"][30:330, 20:320], 1.0, {})
    core.register({"reference": "ref", "target": "tgt"})
    return core


def _state(core: RegistrationCore):
    return core.describe_slots(), core.last_result, core.last_good_result


def _refused(core: RegistrationCore, error: type, call, *args, match: str = ""):
    before = _state(core)
    with pytest.raises(error, match=match):
        call(*args)
    assert _state(core) == before


def test_unknown_slot(core):
    _refused(core, NotFound, core.register, {"reference": "nope", "target": "tgt"}, match="LoadImage")


def test_roi_outside_image(core):
    _refused(core, BadArgument, core.register,
             {"reference": "ref", "target": "tgt", "reference_roi": [400, 0, 200, 100]}, match="outside")


def test_constant_roi_and_constant_image(core):
    flat = np.full((64, 64), 7, np.uint16)
    _refused(core, BadArgument, core.put_image, "flat", flat, 1.0, {}, match="constant")
    image = np.array(core.slots.get("ref").data)
    image[:100, :100] = 3
    core.put_image("patchy", image, 1.0, {})
    _refused(core, BadArgument, core.register,
             {"reference": "patchy", "target": "tgt", "reference_roi": [0, 0, 100, 100]}, match="constant")


def test_nan_and_empty_images(core):
    image = np.ones((50, 50), np.float32)
    image[3, 4] = np.nan
    _refused(core, BadArgument, core.put_image, "nan", image, 1.0, {}, match="NaN")
    _refused(core, BadArgument, core.put_image, "empty", np.zeros((0, 10)), 1.0, {}, match="empty")
    _refused(core, BadArgument, core.put_image, "ref", np.arange(100.0).reshape(10, 10), -1.0, {},
             match="pixel_size")


def test_non_image_and_missing_files(core, tmp_path):
    text = tmp_path / "notes.tif"
    text.write_text("this is not an image")
    _refused(core, BadArgument, core.load_image, "ref", str(text), match="not a readable")
    png = tmp_path / "fake.png"
    png.write_bytes(b"\x89PNG garbage")
    _refused(core, BadArgument, core.load_image, "ref", str(png), match="not a readable")
    _refused(core, NotFound, core.load_image, "ref", str(tmp_path / "missing.tif"), match="no file")


def test_oversized_image_refused_before_decoding(core, tmp_path, monkeypatch):
    import tifffile

    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.arange(200 * 300, dtype=np.uint16).reshape(200, 300))
    monkeypatch.setattr(imageio, "MAX_PIXELS", 50_000)
    _refused(core, BadArgument, core.load_image, "ref", str(path), match="Mpx")
    _refused(core, BadArgument, core.put_image, "ref", np.ones((300, 300)), 1.0, {}, match="Mpx")


def test_argument_models_refuse_bad_json():
    with pytest.raises(BadArgument, match="unknown key"):
        parse_args('{"reference": "a", "target": "b", "modle": "similarity"}', RegisterArgs)
    with pytest.raises(BadArgument):
        parse_args('{"reference": "a", "target": "b", "upsample": 0}', RegisterArgs)
    with pytest.raises(BadArgument):
        parse_args('{"reference": "a", "target": "b", "reference_roi": [0, 0, 10]}', RegisterArgs)
    with pytest.raises(BadArgument, match="at least 3"):
        parse_args('{"reference": "a", "target": "b", "model": "affine", "pairs": [[0,0,1,1],[2,2,3,3]]}',
                   RegisterFiducialsArgs)
    parsed = parse_args('{"reference": "a", "target": "b", "model": "similarity", "upsample": 20}', RegisterArgs)
    assert parsed.model == "similarity" and parsed.upsample == 20


@pytest.mark.parametrize(("text", "match"), [
    ('"rotation_range_deg": [-10, 10]', "models 'similarity' and 'affine' only"),
    ('"model": "similarity", "rotation_range_deg": [10, -10]', "low < high"),
    ('"model": "similarity", "rotation_range_deg": [5, 5]', "low < high"),
    ('"model": "similarity", "rotation_range_deg": [-200, 200]', "more than 360"),
    ('"model": "similarity", "rotation_range_deg": [-10]', "rotation_range_deg"),
    ('"model": "similarity", "rotation_range_deg": [-10, NaN]', "NaN"),
    ('"model": "similarity", "rotation_range_deg": [-10, 1000]', "rotation_range_deg"),
])
def test_rotation_range_refused(core, text, match):
    _refused(core, BadArgument, lambda: core.register(parse_args(f'{{"reference": "ref", "target": "tgt", {text}}}',
                                                                 RegisterArgs)), match=match)


def test_doubtful_result_keeps_previous_good_one(core, micrographs):
    good = core.last_good_result
    rng = np.random.default_rng(3)
    core.put_image("noise", rng.normal(0, 1, (300, 300)).astype(np.float32), 1.0, {})
    result = core.register({"reference": "ref", "target": "noise"})
    assert not result.success and result.confidence < 0.995
    assert core.last_result.target == "noise"
    assert core.last_good_result == good
    overlay = core.overlay
    assert overlay.dtype == np.uint8 and overlay.shape == micrographs["camera"].shape
    assert core.good_overlay.shape == overlay.shape
