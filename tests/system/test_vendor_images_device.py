"""RegistrationDS.LoadImage on files as the lab instruments wrote them, through Tango.

Real vendor files (tests/data/vendor_images): a Zeiss SmartSEM TIFF (pixel size and stage
from its CZ_SEM tag) and a Bruker Esprit .bcf (an element map chosen by name), plus a broken
.bcf refused with a SMART_ reason. A registration onto the Zeiss image runs on the pixel size
read from its tag. (The FEI test files have their image data blanked, so no slot can hold
them; they are tested for their metadata in tests/unit/common/test_vendor_images.py.)
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tango
import tifffile

from macros.smart_calls import command_json
from macros.smart_calls import proxy as device_proxy
from servers.RegistrationDS.device import RegistrationDS
from tests.device_server import serve_devices

DATA = Path(__file__).resolve().parents[1] / "data" / "vendor_images"
REGISTRATION = "test/vendorimages/1"


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tango.DeviceProxy]:
    with serve_devices([RegistrationDS], {REGISTRATION: ("RegistrationDS", {})},
                       tmp_path_factory.mktemp("vendor_server")) as trls:
        proxy = device_proxy(trls[REGISTRATION], 30_000)  # AFM/EDX reads may take up to 25 s (imageio.VENDOR_TIMEOUT_S)
        yield proxy


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("vendor_files")
    with zipfile.ZipFile(DATA / "tiff_Zeiss_SEM_512pix.zip") as archive:
        archive.extract("test_tiff_Zeiss_SEM_512pix.tif", folder)
    zeiss = folder / "test_tiff_Zeiss_SEM_512pix.tif"
    tifffile.imwrite(folder / "shifted.tif", np.roll(tifffile.imread(zeiss), (5, -3), axis=(0, 1)))
    for name in ("test_TEM.bcf", "Nope.bcf"):
        shutil.copyfile(DATA / name, folder / name)
    return {"zeiss": str(zeiss), "shifted": str(folder / "shifted.tif"),
            "bcf": str(folder / "test_TEM.bcf"), "broken": str(folder / "Nope.bcf")}


def call(proxy: tango.DeviceProxy, command_name: str, **argument) -> dict:
    return command_json(proxy, command_name, argument)


def test_zeiss_sem_tiff_loads_with_its_own_pixel_size_and_stage(reg, files) -> None:
    result = call(reg, "LoadImage", slot="sem", path=files["zeiss"])
    assert result["pixel_size_um"] == pytest.approx(0.005825)
    assert result["pixel_size_source"] == "CZ_SEM ap_pixel_size (Pixel Size, nm)"
    assert result["format"] == "SEM TIFF (Zeiss)"
    assert (result["width"], result["height"]) == (512, 384)
    assert result["stage"]["x_um"] == pytest.approx(62996.1)
    info = {slot["slot"]: slot for slot in json.loads(reg.read_attribute("SlotInfo").value)}
    assert info["sem"]["pixel_size_um"] == pytest.approx(0.005825)


def test_registration_uses_the_pixel_size_read_from_the_file(reg, files) -> None:
    call(reg, "LoadImage", slot="sem", path=files["zeiss"])
    call(reg, "LoadImage", slot="shifted", path=files["shifted"], pixel_size_um=0.005825)
    result = call(reg, "Register", reference="sem", target="shifted", model="translation")
    assert result["common_pixel_size_um"] == pytest.approx(0.005825)  # 1.0 had the tag not been read
    assert result["success"] and result["shift_px"] == pytest.approx([3.0, -5.0], abs=0.05)


def test_edx_element_map_is_chosen_by_name(reg, files) -> None:
    result = call(reg, "LoadImage", slot="edx", path=files["bcf"], channel="Cu_Ka")
    assert result["channel"] == "Cu_Ka" and result["format"] == "EDX Bruker Esprit (.bcf)"
    assert (result["width"], result["height"]) == (64, 64)
    assert result["pixel_size_source"].startswith("Bruker .bcf spectrum image, Cu_Ka")
    override = call(reg, "LoadImage", slot="edx", path=files["bcf"], channel="Cu", pixel_size_um=0.001)
    assert override["pixel_size_um"] == 0.001 and override["pixel_size_source"] == "argument pixel_size_um"


def test_broken_or_unnamed_vendor_files_are_refused_and_change_nothing(reg, files) -> None:
    call(reg, "LoadImage", slot="edx", path=files["bcf"], channel="Ti_Ka")
    for argument, words in ((dict(slot="edx", path=files["broken"], channel="Ti_Ka"), "not SFS container"),
                            (dict(slot="edx", path=files["bcf"]), "choose the map to load"),
                            (dict(slot="edx", path=files["zeiss"], channel="Height"), "not a multi-channel file")):
        with pytest.raises(tango.DevFailed) as info:
            reg.command_inout("LoadImage", json.dumps(argument))
        error = info.value.args[0]
        assert error.reason == "SMART_BadArgument" and words in error.desc
    info = {slot["slot"]: slot for slot in json.loads(reg.read_attribute("SlotInfo").value)}
    assert info["edx"]["width"] == 64
