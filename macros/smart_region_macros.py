"""Several regions of one sample: register high-magnification SEM images into an overview
and queue the particles of every region.

The hierarchy in CoordMapperDS is ``tile -> overview -> camera -> stage``: the overview (the
whole membrane, markers in view) registers to the camera with ``smart_register``; each tile
(a high-magnification image of a region of interest) registers into the overview with
``smart_register_region`` (same modality, different magnification: RegistrationDS between
two reference images), stored as the edge ``tile -> overview``. ``Map`` from a tile to the
stage then goes through the graph, and any later fine alignment ``tile -> stage`` is used
instead, as for a single image. ``smart_queue_region`` detects the particles of one tile and
adds them to the night queue with the tile as their frame and region.

Orchestration only, as the other SMART macros: every step is a device call.
"""

from __future__ import annotations

import os
import re

from sardana.macroserver.macro import Optional, Type

# modules of the installed ``macros`` package (setup.cfg); Sardana loads this file from its MacroPath
from macros.smart_calls import call_json
from macros.smart_macros import _SmartMacro
from macros.smart_queue_macros import _QueueMacro
from macros.smart_queue_support import scan_spec
from macros.smart_region_support import replace_frame
from macros.smart_support import SmartMacroError, check_storable

PARENT_SLOT = "region_parent"
REGION_SLOT = "region"
SCALE_TOLERANCE = 0.05
"""How far (relative) the registered scale may differ from the ratio of the two files' pixel
sizes: a lab SEM's magnification is good to 1-2 %; a match at another scale is a wrong one."""
DEFAULT_ROTATION_RANGE_DEG = (-5.0, 5.0)
"""Where a tile's rotation onto its overview is searched unless SmartRegionRotationRange says
otherwise: tiles and overview taken in one SEM session share the scan rotation. A search
over the whole circle finds a 82 µm tile in a membrane overview only now and then (it is then
refused, not stored wrong: the virtual beamline's tiles, 1 of 4), and takes ~30 s instead of ~6 s."""
RESERVED_FRAMES = ("camera", "stage")
REGION_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""What the queue accepts as a region label (and so as a region's frame name)."""


def region_images(macro: _SmartMacro) -> dict:
    """``SmartRegions``: {frame: {"image", "parent", ...}} of the registered regions, plus the
    frame of the last smart_register with its image (the usual parent: the overview)."""
    regions = dict(macro.env_or("SmartRegions", None) or {})
    frame, image = macro.env_or("SmartReferenceFrame", None), macro.env_or("SmartReferenceImage", None)
    if frame and image and frame not in regions:
        regions[frame] = {"image": image, "parent": "camera"}
    return regions


class smart_register_region(_SmartMacro):
    """Register a high-magnification image of a region into its parent image (the overview)
    and store ``region -> parent`` in the mapper, so that region pixels map to the stage
    through the parent's own registration. Refuses to store a registration in doubt."""

    param_def = [
        ["image", Type.String, None, "absolute path of the region's image (SEM TIFF, ...)"],
        ["region", Type.String, None, "name of the region: its mapper frame and queue label, e.g. tile1"],
        ["parent", Type.String, Optional, "frame the region lies in (default: the last smart_register's frame)"],
        ["parent_image", Type.String, Optional, "the parent's image (default: the one registered for it)"],
    ]

    def run(self, image, region, parent=None, parent_image=None):
        _, registration, _, mapper = self.devices()
        known = region_images(self)
        parent = parent or self.env_or("SmartReferenceFrame", None)
        if not parent:
            raise SmartMacroError("SMART_NotReady: no parent frame: register the overview to the camera first "
                                  "(smart_register /abs/overview.tif affine overview) or name the parent")
        if not REGION_NAME.fullmatch(region):
            raise SmartMacroError(f"SMART_BadArgument: region name '{region}': use 1-64 of A-Z a-z 0-9 _ . - "
                                  "(it is the mapper frame and the queue's region label), e.g. tile1")
        if region in RESERVED_FRAMES or region == parent:
            raise SmartMacroError(f"SMART_BadArgument: the region cannot be named '{region}' (the mapper's own "
                                  f"frames are {', '.join(RESERVED_FRAMES)}, the parent is '{parent}'); use e.g. tile1")
        frames = list(mapper.read_attribute("Frames").value or [])
        if parent not in frames:
            raise SmartMacroError(f"SMART_NotFound: the mapper has no frame '{parent}' (frames: {', '.join(frames)}): "
                                  f"register it first, e.g. smart_register /abs/overview.tif affine {parent}")
        parent_image = parent_image or known.get(parent, {}).get("image")
        for what, text in (("the region's image path", image), ("the parent's image path", parent_image or "")):
            check_storable(what, text)  # before the registration, which would be lost otherwise
        if not parent_image:
            raise SmartMacroError(f"SMART_NotReady: which image is '{parent}'? Give it: smart_register_region "
                                  f"{image} {region} {parent} /abs/path/of/{parent}.tif")
        loaded_parent = self.load(registration, PARENT_SLOT, parent_image, parent)
        loaded = self.load(registration, REGION_SLOT, image, region)
        expected = float(loaded["pixel_size_um"]) / float(loaded_parent["pixel_size_um"])
        # affine: the region and its parent each carry their SEM's own scan errors (1-2 %
        # magnification per axis, shear), which no similarity follows (docs/registration.md)
        request = {"reference": PARENT_SLOT, "target": REGION_SLOT, "model": "affine",
                   "prior": {"scale": expected, "scale_tolerance": SCALE_TOLERANCE}}
        window = self.env_or("SmartRegionRotationRange", None) or DEFAULT_ROTATION_RANGE_DEG
        request["rotation_range_deg"] = [float(v) for v in window]
        result = call_json(registration, "Register", request)
        self.output(f"{region} in {parent}: rotation {result['rotation_deg']:.3f} deg, scale {result['scale']:.5f} "
                    f"{parent} px per {region} px (the files' pixel sizes say {expected:.5f}), shift "
                    f"{result['shift_px'][0]:.2f} {result['shift_px'][1]:.2f} px, confidence "
                    f"{result['confidence']:.4f} ({result['elapsed_ms']:.0f} ms)")
        if not result.get("success"):
            raise SmartMacroError(f"SMART_Unsafe: the registration of {image} into {parent} is in doubt "
                                  f"(confidence {result['confidence']:.3f}; "
                                  f"{'; '.join(result.get('warnings', [])[:2])}); nothing was stored. Check that "
                                  f"the region lies inside {parent_image} and that both files give the right "
                                  "pixel size; set the rotation search with senv SmartRegionRotationRange LOW HIGH "
                                  f"(now {window[0]:g} to {window[1]:g} deg).")
        if region in frames:
            # a new registration of this region replaces what the mapper knew about it, a fine
            # alignment region -> stage included (it was made against the earlier registration)
            removed, _ = replace_frame(mapper, region)
            if removed:
                self.output(f"replacing the earlier {region} registration and alignment "
                            f"({', '.join(' -> '.join(edge) for edge in removed)})")
        transform = {"from": region, "to": parent, "matrix": result["matrix"], "from_unit": "px", "to_unit": "px"}
        if result.get("covariance") is not None:
            transform["covariance"] = result["covariance"]
        call_json(mapper, "SetTransform", transform)
        regions = dict(self.env_or("SmartRegions", None) or {})
        regions[region] = {"image": image, "parent": parent, "parent_image": parent_image,
                           "rotation_deg": float(result["rotation_deg"]), "scale": float(result["scale"]),
                           "confidence": float(result["confidence"])}
        self.setEnv("SmartRegions", regions)
        self.output(f"stored {region} -> {parent}; {region} pixels now map to the stage through {parent}")
        return float(result["confidence"])

    result_def = [["confidence", Type.Float, None, "the registration's confidence"]]

    def load(self, registration, slot: str, path: str, name: str) -> dict:
        """LoadImage, with an error that names the region and what to do."""
        try:
            return call_json(registration, "LoadImage", {"slot": slot, "path": path})
        except SmartMacroError as exc:
            raise SmartMacroError(f"the image of '{name}' could not be loaded ({exc}); give the absolute path of "
                                  "an existing image file, as the registration server sees it") from None


class smart_queue_region(_QueueMacro):
    """Detect the particles of a registered region (ParticleDS, its current settings) and add
    them to the night queue with the region as frame and label."""

    param_def = [
        ["region", Type.String, None, "a region registered with smart_register_region (or the overview)"],
        ["what", Type.String, "isolated", "isolated | all"],
        ["half_width_um", Type.Float, 0.3, "half width of each scan (um)"],
        ["step_um", Type.Float, 0.05, "scan step (um)"],
        ["exposure", Type.Float, 0.01, "integration time per point (s)"],
    ]
    result_def = [["added", Type.Integer, None, "targets added"]]

    def run(self, region, what, half_width_um, step_um, exposure):
        if what not in ("isolated", "all"):
            raise SmartMacroError(f"SMART_BadArgument: '{what}': give isolated or all")
        known = region_images(self)
        if region not in known:
            raise SmartMacroError(f"SMART_NotFound: no region '{region}' registered (known: "
                                  f"{', '.join(sorted(known)) or 'none'}); run smart_register_region "
                                  f"/abs/{region}.tif {region} first")
        _, _, particles, mapper = self.devices()
        if region not in list(mapper.read_attribute("Frames").value or []):
            raise SmartMacroError(f"SMART_NotFound: the mapper no longer has the frame '{region}' (the parent was "
                                  f"registered again?); run smart_register_region for it again")
        queue = self.queue()
        scan = scan_spec(half_width_um, step_um, exposure)  # checked before the detection's minutes
        path = known[region]["image"]
        found = call_json(particles, "Detect", {"path": path})
        self.setEnv("SmartParticleImage", path)
        self.output(f"{region}: {found['count']} particles found on {os.path.basename(path)}, {found['isolated']} "
                    f"isolated ({found['elapsed_ms']:.0f} ms)")
        if (found["isolated"] if what == "isolated" else found["count"]) == 0:
            self.warning(f"{region}: no {what} particles to add")
            return 0
        reply = call_json(queue, "AddParticles", {"particles": what, "scan": scan, "frame": region,
                                                  "region": region, "skip_duplicates": True})
        skipped = len(reply.get("duplicates", []))
        self.output(f"{region}: {reply['count']} target(s) added" + (f", {skipped} already queued" if skipped else ""))
        self.show_counts(queue)
        return int(reply["count"])

