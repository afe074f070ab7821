"""Detection settings and the Detect argument, as strict pydantic models.

The settings are the ten memorized Tango attributes of ParticleDS, named exactly as the
attributes, so one model serves the attribute writes, the per-call overrides of
``Detect`` and the validation of both. Tango attributes cannot hold ``None``, hence the
"0 means automatic" convention for MaxSize, Separation and Threshold, documented in
docs/particles.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from servers.common.errors import BadArgument
from servers.common.jsonargs import StrictArgs

MethodName = Literal["locate", "locate_brightfield_ring"]
METHODS: tuple[str, ...] = ("locate", "locate_brightfield_ring")

MAX_DIAMETER = 255
"""Largest feature diameter in px; beyond it the refinement mask costs more than a bin of the image."""

SETTING_NAMES: tuple[str, ...] = ("Diameter", "MinMass", "MaxSize", "Separation", "NoiseSize",
                                  "Threshold", "Percentile", "Invert", "Method", "IsolationRadius")

NonNegative = Annotated[float, Field(ge=0.0)]


def _check_odd_diameter(value: int) -> int:
    if value % 2 == 0:
        raise ValueError(
            f"Diameter must be an odd number of pixels (trackpy centres its mask on one pixel); "
            f"use {value - 1} or {value + 1}"
        )
    return value


class ParticleSettings(StrictArgs):
    """The detection settings; defaults are trackpy's own except where Tango needs a number."""

    Diameter: int = Field(11, ge=3, le=MAX_DIAMETER,
                          description="feature diameter in px, odd; a little larger than the particles")
    MinMass: NonNegative = Field(0.0, description="minimum integrated brightness of a feature")
    MaxSize: NonNegative = Field(0.0, description="maximum radius of gyration in px; 0 = no limit")
    Separation: NonNegative = Field(0.0, description="minimum distance between features in px; "
                                                     "0 = Diameter + 1")
    NoiseSize: NonNegative = Field(1.0, description="width of the Gaussian noise filter in px")
    Threshold: NonNegative = Field(0.0, description="clip the band-passed image below this; "
                                                    "0 = trackpy default")
    Percentile: float = Field(64.0, ge=0.0, lt=100.0,
                              description="peaks must be brighter than this percentile of the image")
    Invert: bool = Field(False, description="look for dark features on a bright background")
    Method: MethodName = Field("locate", description="locate | locate_brightfield_ring")
    IsolationRadius: NonNegative = Field(30.0, description="px; a nearer neighbour makes a particle "
                                                           "not isolated")

    @field_validator("Diameter")
    @classmethod
    def _odd(cls, value: int) -> int:
        return _check_odd_diameter(value)

    @field_validator("Separation")
    @classmethod
    def _separation_zero_or_a_pixel(cls, value: float) -> float:
        # A positive separation below a pixel tells nothing apart and, near 0, overflows trackpy's
        # neighbour search (1e-300 made every Detect fail), so only 0 (automatic) or >= 1 px.
        if 0.0 < value < 1.0:
            raise ValueError(f"Separation must be 0 (= Diameter + 1) or at least 1 px: features closer than a "
                             f"pixel cannot be told apart; got {value:g}")
        return value

    @model_validator(mode="after")
    def _noise_below_diameter(self) -> ParticleSettings:
        if self.NoiseSize >= self.Diameter:
            raise ValueError(
                f"NoiseSize ({self.NoiseSize:g} px) must be smaller than Diameter ({self.Diameter} px): "
                "the band-pass keeps structures between the two; lower NoiseSize (typically 1)"
            )
        return self

    @property
    def separation_px(self) -> float:
        """The separation trackpy should use: the explicit one, else Diameter + 1."""
        return self.Separation if self.Separation > 0 else float(self.Diameter + 1)

    @property
    def max_size_px(self) -> float | None:
        return self.MaxSize if self.MaxSize > 0 else None

    def with_overrides(self, overrides: dict[str, Any]) -> ParticleSettings:
        """A new validated settings object; cross-field rules see the merged values."""
        merged = self.model_dump()
        merged.update(overrides)
        return validated_settings(merged)


class DetectArgs(StrictArgs):
    """The JSON argument of ``Detect``: where the image is, an optional ROI, setting overrides.

    ``path`` and ``attribute`` are resolved by the device shell (file read by the server,
    or a Tango image attribute); with neither, the shell re-uses its last image.
    """

    path: str | None = Field(None, min_length=1, description="image file read by the server")
    channel: str | None = Field(None, min_length=1, max_length=64,
                                description="channel of an AFM file or element map of an EDX file (with path)")
    attribute: str | None = Field(None, min_length=1,
                                  description="Tango image attribute, e.g. smart/camera/1/Image")
    roi: list[int] | None = Field(None, min_length=4, max_length=4,
                                  description="[x, y, w, h] in source-image pixels")
    Diameter: int | None = Field(None, ge=3, le=MAX_DIAMETER)
    MinMass: NonNegative | None = None
    MaxSize: NonNegative | None = None
    Separation: NonNegative | None = None
    NoiseSize: NonNegative | None = None
    Threshold: NonNegative | None = None
    Percentile: float | None = Field(None, ge=0.0, lt=100.0)
    Invert: bool | None = None
    Method: MethodName | None = None
    IsolationRadius: NonNegative | None = None

    @field_validator("Diameter")
    @classmethod
    def _odd(cls, value: int | None) -> int | None:
        return None if value is None else _check_odd_diameter(value)

    @model_validator(mode="after")
    def _one_source(self) -> DetectArgs:
        if self.path is not None and self.attribute is not None:
            raise ValueError("give either 'path' or 'attribute', not both")
        if self.channel is not None and self.path is None:
            raise ValueError("'channel' chooses a channel of the file in 'path'; give 'path' with it")
        return self

    def overrides(self) -> dict[str, Any]:
        """The settings given for this call only."""
        return {name: getattr(self, name) for name in SETTING_NAMES if getattr(self, name) is not None}


def describe_validation_error(exc: ValidationError) -> str:
    """One readable sentence from a pydantic error, naming each offending setting."""
    parts = []
    for error in exc.errors()[:5]:
        location = ".".join(str(p) for p in error.get("loc", ())) or "settings"
        if error.get("type") == "extra_forbidden":
            parts.append(f"unknown setting '{location}' (known: {', '.join(SETTING_NAMES)})")
        else:
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{location}: {message}" if location != "settings" else message)
    return "; ".join(parts)


def validated_settings(data: dict[str, Any]) -> ParticleSettings:
    """Validate a full settings mapping or raise :class:`BadArgument` with a usable message."""
    try:
        return ParticleSettings.model_validate({k: _plain(v) for k, v in data.items()})
    except ValidationError as exc:
        raise BadArgument(f"bad particle settings: {describe_validation_error(exc)}") from None


def _plain(value: Any) -> Any:
    """numpy scalars (as written by Tango) become Python ones so strict validation accepts them."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        return item()
    return value
