"""Lab images as the instruments write them: SEM TIFFs, AFM files and EDX maps (no Tango).

Real files (tests/data/vendor_images, from HyperSpy's test data): Thermo Fisher/FEI Helios
and Zeiss SEM TIFFs, Bruker .bcf EDX. Written here after each format's specification
(tests/unit/common/vendor_writers.py): TESCAN TIFF, Gwyddion .gwy, JPK .jpk, Bruker Nanoscope
.spm, Asylum Research/Igor .ibw. The expected
values for the real files are the numbers in their metadata as the vendor software wrote them.
"""

from __future__ import annotations

import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from servers.common import imageio
from servers.common.edx_maps import fwhm_kev, line_energy_kev
from servers.common.errors import BadArgument
from servers.common.sem_tiff import tescan_fields
from servers.RegistrationDS.core import RegistrationCore
from tests.unit.common import vendor_writers

DATA = Path(__file__).resolve().parents[2] / "data" / "vendor_images"


def unzip(name: str, member: str, into: Path) -> str:
    with zipfile.ZipFile(DATA / name) as archive:
        archive.extract(member, into)
    return str(into / member)


def copy(name: str, into: Path, as_name: str | None = None) -> str:
    target = into / (as_name or name)
    shutil.copyfile(DATA / name, target)
    return str(target)


# ---------------------------------------------------------------- SEM TIFF: real files
@pytest.mark.parametrize("member, dtype", [("FEI-Helios-Ebeam-8bits.tif", np.uint8),
                                           ("FEI-Helios-Ebeam-16bits.tif", np.uint16)])
def test_fei_helios_pixel_size_stage_and_data_bar(tmp_path, member, dtype):
    """HyperSpy blanked these files' scan area (zeros) to keep them small; the metadata is real."""
    path = unzip("tiff_FEI_Helios.zip", member, tmp_path)
    loaded = imageio.read_image(path)
    # [Scan] PixelWidth=3.3724e-06 (m); [Image] ResolutionY=442 of 471 stored rows
    assert loaded.pixel_size_um == pytest.approx(3.3724)
    assert loaded.pixel_size_source == "FEI_HELIOS [Scan] PixelWidth (m)"
    assert loaded.file_format == "SEM TIFF (Thermo Fisher/FEI)"
    assert loaded.data.shape == (442, 512) and loaded.data.dtype == dtype
    with tifffile.TiffFile(path) as tif:
        np.testing.assert_array_equal(loaded.data, tif.pages[0].asarray()[:442])
    assert any("data bar" in w for w in loaded.warnings)
    # [Stage] StageX=2.576e-05, StageY=-0.000194177, StageZ=0.007965 (m), StageR=-2.3611 (rad)
    assert loaded.stage["x_um"] == pytest.approx(25.76)
    assert loaded.stage["y_um"] == pytest.approx(-194.177)
    assert loaded.stage["z_um"] == pytest.approx(7965.0)
    assert loaded.stage["rotation_deg"] == pytest.approx(math.degrees(-2.3611))
    assert "StageX/Y/Z (m)" in loaded.stage_source


def test_fei_navigation_camera_image_without_scan_pixel_size_says_so(tmp_path):
    loaded = imageio.read_image(unzip("tiff_FEI_Helios.zip", "FEI-Helios-navcam.tif", tmp_path))
    assert loaded.file_format == "SEM TIFF (Thermo Fisher/FEI)"
    assert any("no [Scan] PixelWidth" in w for w in loaded.warnings)
    # only the generic resolution tags remain, and they are named as such
    assert loaded.pixel_size_source == "TIFF XResolution and ResolutionUnit"
    assert loaded.stage["x_um"] == pytest.approx(69919.7)


def test_zeiss_pixel_size_and_stage(tmp_path):
    loaded = imageio.read_image(unzip("tiff_Zeiss_SEM_512pix.zip", "test_tiff_Zeiss_SEM_512pix.tif", tmp_path))
    # CZ_SEM ap_pixel_size = ('Pixel Size', 5.825, 'nm'); ap_stage_at_x = 62.9961 mm, ..._r = 245.8 deg
    assert loaded.pixel_size_um == pytest.approx(0.005825)
    assert loaded.pixel_size_source == "CZ_SEM ap_pixel_size (Pixel Size, nm)"
    assert loaded.file_format == "SEM TIFF (Zeiss)"
    assert loaded.data.shape == (384, 512)
    assert loaded.stage == pytest.approx({"x_um": 62996.1, "y_um": 65316.8, "z_um": 44678.0,
                                          "rotation_deg": 245.8, "tilt_deg": 0.0})
    assert loaded.warnings == []


def test_own_json_pixel_size_still_wins_over_resolution_tags(tmp_path):
    path = tmp_path / "own.tif"
    tifffile.imwrite(path, np.arange(64, dtype=np.uint16).reshape(8, 8), description='{"pixel_size_um": 0.3}',
                     resolution=(1000, 1000))
    loaded = imageio.read_image(str(path))
    assert loaded.pixel_size_um == 0.3 and loaded.pixel_size_source == "ImageDescription JSON pixel_size_um"
    assert loaded.file_format == "TIFF"


# ------------------------------------------------------------ SEM TIFF: TESCAN (spec-written)
TESCAN_MAIN = {"Device": "MIRA3 LMH", "PixelSizeX": "4.6875e-009", "PixelSizeY": "4.6875e-009",
               "Magnification": "25000"}
TESCAN_SEM = {"HV": "15000", "StageX": "0.0123", "StageY": "-0.002", "StageZ": "0.0105",
              "StageRotation": "30", "StageTilt": "5"}


def test_tescan_pixel_size_and_stage(tmp_path):
    image = np.random.default_rng(2).integers(0, 255, (40, 48)).astype(np.uint8)
    path = tmp_path / "tescan.tif"
    vendor_writers.write_tescan_tiff(path, image, vendor_writers.tescan_tag(TESCAN_MAIN, TESCAN_SEM))
    loaded = imageio.read_image(str(path))
    assert loaded.pixel_size_um == pytest.approx(0.0046875)
    assert loaded.pixel_size_source == "TESCAN tag 50431 [MAIN] PixelSizeX (m)"
    assert loaded.file_format == "SEM TIFF (TESCAN)"
    assert loaded.stage == pytest.approx({"x_um": 12300.0, "y_um": -2000.0, "z_um": 10500.0,
                                          "rotation_deg": 30.0, "tilt_deg": 5.0})
    np.testing.assert_array_equal(loaded.data, image)


def test_tescan_damaged_tag_is_named_and_no_pixel_size_is_invented(tmp_path):
    tag = vendor_writers.tescan_tag(TESCAN_MAIN, TESCAN_SEM)[:-20]  # cut inside the SEM block
    with pytest.raises(ValueError, match="does not fit"):
        tescan_fields(tag)
    path = tmp_path / "cut.tif"
    vendor_writers.write_tescan_tiff(path, np.arange(100, dtype=np.uint8).reshape(10, 10), tag)
    loaded = imageio.read_image(str(path))
    assert loaded.pixel_size_um is None and loaded.pixel_size_source is None
    assert any("TESCAN metadata (tag 50431) is damaged" in w for w in loaded.warnings)


# ---------------------------------------------------------------------- AFM (spec-written)
def test_gwyddion_channel_and_pixel_size(tmp_path):
    rng = np.random.default_rng(3)
    height, phase = rng.random((32, 32)) * 1e-8, rng.random((32, 32))
    path = tmp_path / "scan.gwy"
    vendor_writers.write_gwy(path, {"Height": height, "Phase": phase}, xreal_m=2e-6)
    loaded = imageio.read_image(str(path))
    assert loaded.channel == "Height" and loaded.file_format == "AFM Gwyddion (.gwy)"
    np.testing.assert_allclose(loaded.data, height * 1e9)  # AFMReader gives nm
    assert loaded.pixel_size_um == pytest.approx(2.0 / 32)
    assert loaded.pixel_size_source.startswith("GwyDataField xreal / xres")
    other = imageio.read_image(str(path), channel="Phase")
    np.testing.assert_allclose(other.data, phase * 1e9)


def test_gwyddion_non_square_field_is_refused_not_scrambled(tmp_path):
    path = tmp_path / "wide.gwy"
    vendor_writers.write_gwy(path, {"Height": np.random.default_rng(4).random((24, 32))}, xreal_m=1e-6)
    with pytest.raises(BadArgument, match="non-square Gwyddion field"):
        imageio.read_image(str(path))


def test_jpk_channel_scaling_and_pixel_size(tmp_path):
    counts = np.random.default_rng(5).integers(-5000, 5000, (32, 40))
    path = tmp_path / "scan.jpk"
    vendor_writers.write_jpk(path, {"height_trace": counts, "height_retrace": counts[::-1]}, ulength_m=4e-6,
                             metres_per_count=1e-11)
    loaded = imageio.read_image(str(path))
    assert loaded.channel == "height_trace" and loaded.file_format == "AFM JPK (.jpk)"
    np.testing.assert_allclose(loaded.data, np.flipud(counts * 1e-2), rtol=1e-6)  # nm; row 0 = top of scan
    assert loaded.pixel_size_um == pytest.approx(0.1)
    assert loaded.pixel_size_source.startswith("JPK tags Grid-uLength / Grid-iLength")
    with pytest.raises(BadArgument, match=r"has no channel 'Height'; it has .*height_retrace"):
        imageio.read_image(str(path), channel="Height")


def test_nanoscope_channel_scaling_and_pixel_size(tmp_path):
    rng = np.random.default_rng(8)
    height, amplitude = rng.integers(-30000, 30000, (32, 32)), rng.integers(-30000, 30000, (32, 32))
    path = tmp_path / "scan.spm"
    vendor_writers.write_nanoscope(path, {"Height": height, "Height Retrace": height[::-1] // 2,
                                          "Amplitude": amplitude},
                                   scan_size_nm=2000.0, volts_per_lsb_range=440.0, sensitivity_nm_per_v=12.5)
    nm_per_count = 440.0 / 65536 * 12.5  # Z scale range / 2^16 (V per count) x Zsens (nm/V)
    loaded = imageio.read_image(str(path))
    assert loaded.channel == "Height" and loaded.file_format == "AFM Bruker Nanoscope (.spm)"
    # the trace image (not the retrace one of the same name); row 0 = top of scan = last line in the file
    np.testing.assert_allclose(loaded.data, np.flipud(height) * nm_per_count)
    assert loaded.pixel_size_um == pytest.approx(2.0 / 32)
    assert loaded.pixel_size_source.startswith("Nanoscope header Scan Size / Samps/line")
    other = imageio.read_image(str(path), channel="Amplitude")
    np.testing.assert_allclose(other.data, np.flipud(amplitude) * nm_per_count)
    with pytest.raises(BadArgument, match=r"has no channel 'Phase'; it has .*'Amplitude'"):
        imageio.read_image(str(path), channel="Phase")


ASYLUM_NOTE = {"ImagingMode": "AC Mode", "ScanSize": "2e-06", "FastScanSize": "2e-06", "SlowScanSize": "2e-06",
               "ScanPoints": "32", "ScanLines": "32", "ScanRate": "1", "XOffset": "0", "YOffset": "0"}


def test_asylum_ibw_channel_and_pixel_size(tmp_path):
    rng = np.random.default_rng(9)
    trace, retrace = rng.random((32, 32)) * 1e-8, rng.random((32, 32)) * 1e-8
    path = tmp_path / "scan.ibw"
    vendor_writers.write_ibw(path, {"HeightTrace": trace, "HeightRetrace": retrace, "AmplitudeRetrace": trace / 4},
                             vendor_writers.asylum_note(ASYLUM_NOTE), pixel_m=2e-6 / 32)
    loaded = imageio.read_image(str(path))  # clean labels: AFMReader's 'HeightTracee' is absent
    assert loaded.channel == "HeightTrace" and loaded.file_format == "AFM Asylum Research/Igor (.ibw)"
    np.testing.assert_allclose(loaded.data, trace * 1e9, rtol=1e-6)  # float32 m -> nm
    assert loaded.pixel_size_um == pytest.approx(2.0 / 32)
    assert loaded.pixel_size_source.startswith("wave note SlowScanSize / rows")
    other = imageio.read_image(str(path), channel="HeightRetrace")
    np.testing.assert_allclose(other.data, retrace * 1e9, rtol=1e-6)
    with pytest.raises(BadArgument, match=r"has no channel 'PhaseTrace'; it has .*'AmplitudeRetrace'"):
        imageio.read_image(str(path), channel="PhaseTrace")


def test_asylum_label_tail_makes_afmreaders_default_channel_name(tmp_path):
    """Bytes after a label's NUL are joined to it by igor2: 'HeightTrace\\0e' reads 'HeightTracee'."""
    image = np.random.default_rng(10).random((32, 32)) * 1e-8
    path = tmp_path / "tail.ibw"
    vendor_writers.write_ibw(path, {"HeightTrace": image, "HeightRetrace": image}, vendor_writers.asylum_note(
        ASYLUM_NOTE), pixel_m=2e-6 / 32, after_nul={"HeightTrace": b"e"})
    loaded = imageio.read_image(str(path))
    assert loaded.channel == "HeightTracee"
    np.testing.assert_allclose(loaded.data, image * 1e9, rtol=1e-6)
    no_height = tmp_path / "amplitude.ibw"
    vendor_writers.write_ibw(no_height, {"AmplitudeTrace": image}, vendor_writers.asylum_note(ASYLUM_NOTE),
                             pixel_m=2e-6 / 32)
    with pytest.raises(BadArgument, match=r"has no channel 'HeightTracee' nor 'HeightTrace'; it has "
                                          r"\['AmplitudeTrace'\]"):
        imageio.read_image(str(no_height))


@pytest.mark.parametrize("suffix", [".spm", ".gwy", ".ibw", ".jpk"])
def test_broken_afm_files_are_refused_naming_the_format(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"this is no AFM file\x00" * 8)
    with pytest.raises(BadArgument, match=r"is not a .* AFM file: "):
        imageio.read_image(str(path))


# --------------------------------------------------------------------- EDX: real .bcf files
def test_bcf_element_map_by_line_and_by_element(tmp_path):
    path = copy("test_TEM.bcf", tmp_path)
    loaded = imageio.read_image(path, channel="Cu_Ka")
    assert loaded.data.shape == (64, 64) and loaded.file_format == "EDX Bruker Esprit (.bcf)"
    assert loaded.channels == ["Cu_Ka", "O_Ka", "Pd_La", "Ti_Ka", "HAADF"]
    assert loaded.pixel_size_um == pytest.approx(0.000771004754204027)
    assert "width axis scale" in loaded.pixel_size_source
    low, high = loaded.metadata["energy_window_kev"]
    assert low < line_energy_kev("Cu_Ka") < high
    # the map is the cube summed over exactly that window
    from rsciio.bruker import file_reader

    cube = next(s for s in file_reader(path) if s["data"].ndim == 3)
    axis = cube["axes"][-1]
    first = round((low - axis["offset"]) / axis["scale"])
    last = round((high - axis["offset"]) / axis["scale"])
    np.testing.assert_array_equal(loaded.data, cube["data"][..., first:last].sum(axis=-1))
    by_element = imageio.read_image(path, channel="Cu")
    np.testing.assert_array_equal(by_element.data, loaded.data)


def test_bcf_electron_image_and_stage(tmp_path):
    path = copy("over16bit.bcf", tmp_path)
    loaded = imageio.read_image(path, channel="BSE")
    assert loaded.data.shape == (3, 4) and loaded.channel == "BSE"
    assert loaded.pixel_size_um == pytest.approx(515.887176865564)


def test_bcf_needs_a_channel_and_lists_them(tmp_path):
    path = copy("test_TEM.bcf", tmp_path)
    with pytest.raises(BadArgument, match=r"choose the map to load with \"channel\".*Cu_Ka, O_Ka, Pd_La, Ti_Ka.*HAADF"):
        imageio.read_image(path)
    with pytest.raises(BadArgument, match="no map 'Xx'"):
        imageio.read_image(path, channel="Xx")
    with pytest.raises(BadArgument, match="not a chemical element symbol"):
        imageio.read_image(path, channel="Qq_Ka")


def test_broken_bcf_is_refused_naming_the_container(tmp_path):
    with pytest.raises(BadArgument, match="not a readable Bruker .bcf file.*not SFS container"):
        imageio.read_image(copy("Nope.bcf", tmp_path), channel="Fe_Ka")


def test_line_energies_and_detector_resolution():
    assert line_energy_kev("Fe_Ka") == pytest.approx(6.404, abs=0.002)
    assert line_energy_kev("Ce_La") == pytest.approx(4.840, abs=0.002)
    assert fwhm_kev(5.8987, 130.0) == pytest.approx(0.130)
    assert fwhm_kev(1.0, 130.0) < 0.130 < fwhm_kev(10.0, 130.0)


# ------------------------------------------------------------------- common refusals
def test_channel_on_a_single_image_format_is_refused(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.arange(64, dtype=np.uint8).reshape(8, 8))
    with pytest.raises(BadArgument, match="not a multi-channel file"):
        imageio.read_image(str(path), channel="Height")


def test_unknown_format_is_refused_listing_known_ones(tmp_path):
    path = tmp_path / "scan.xyz"
    path.write_bytes(b"\x89 unknown instrument format \x00" * 10)
    with pytest.raises(BadArgument, match="known format: TIFF .*AFM .spm/.gwy/.ibw/.jpk, Bruker EDX .bcf"):
        imageio.read_image(str(path))


# ----------------------------------------------------------------- LoadImage semantics
def test_loadimage_uses_the_file_pixel_size_and_names_its_field(tmp_path):
    core = RegistrationCore()
    path = unzip("tiff_Zeiss_SEM_512pix.zip", "test_tiff_Zeiss_SEM_512pix.tif", tmp_path)
    result = core.load_image("sem", path)
    assert result.slot.pixel_size_um == pytest.approx(0.005825)
    assert result.file.pixel_size_source == "CZ_SEM ap_pixel_size (Pixel Size, nm)"
    assert result.file.format == "SEM TIFF (Zeiss)" and result.file.stage["x_um"] == pytest.approx(62996.1)


def test_loadimage_explicit_pixel_size_wins_and_the_difference_is_reported(tmp_path):
    core = RegistrationCore()
    path = unzip("tiff_Zeiss_SEM_512pix.zip", "test_tiff_Zeiss_SEM_512pix.tif", tmp_path)
    result = core.load_image("sem", path, pixel_size_um=0.006)
    assert result.slot.pixel_size_um == 0.006 and result.file.pixel_size_source == "argument pixel_size_um"
    assert any("the file says 0.005825" in w for w in result.slot.warnings)


def test_loadimage_edx_map_with_channel_and_failed_load_keeps_the_slot(tmp_path):
    core = RegistrationCore()
    path = copy("test_TEM.bcf", tmp_path)
    first = core.load_image("edx", path, channel="Ti_Ka")
    assert first.file.channel == "Ti_Ka" and first.file.format == "EDX Bruker Esprit (.bcf)"
    with pytest.raises(BadArgument):
        core.load_image("edx", copy("Nope.bcf", tmp_path), channel="Ti_Ka")
    assert core.describe_slots()[0].width == 64  # the refused load left the slot as it was


def test_loadimage_without_pixel_size_in_the_file_says_default(tmp_path):
    path = tmp_path / "plain.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(6).integers(0, 255, (16, 16)).astype(np.uint8)).save(path)
    result = RegistrationCore().load_image("p", str(path))
    assert result.file.pixel_size_source == "default (the file gives none)" and result.file.format == "PNG"


def test_truncated_nanoscope_header_is_refused_before_the_reader_runs(tmp_path):
    path = tmp_path / "cut.spm"
    path.write_bytes(b"\\*File list\r\n\\Version: 0x09300201\r\n\\*Ciao image list\r\n")
    with pytest.raises(BadArgument, match=r"has no '\\\*File list end' \(truncated\?\)"):
        imageio.read_image(str(path))
