"""The accuracy bars on a fixed small sample of the independent corpus (benchmarks/corpus).

The full corpus runs in ``make bench`` (benchmarks/bench_registration.py, accuracy table);
this sample (``cases.sample()``: 8 translation, 5 similarity and 2 cross-modal cases, 7
unrelated pairs, tuned and held-out sources mixed) runs through the same
``RegistrationCore.register`` the device calls, at upsample 100.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.corpus import cases, evaluate
from servers.CoordMapperDS.args import MapArgs, SetTransformArgs
from servers.CoordMapperDS.core import CoordMapperCore
from servers.RegistrationDS.core import RegistrationCore


@pytest.fixture(scope="module")
def outcomes() -> list[evaluate.Outcome]:
    return [evaluate.run_ours(case) for case in cases.sample()]


def _of(outcomes: list[evaluate.Outcome], kind: str) -> list[evaluate.Outcome]:
    return [o for o in outcomes if o.case.kind == kind]


def test_translation_bar(outcomes):
    translation = _of(outcomes, "translation")
    accepted = [o for o in translation if o.accepted]
    assert len(translation) == 8 and len(accepted) >= 7, [o.note for o in translation if not o.accepted]
    errors = [o.errors()["shift"] for o in accepted]
    assert math.sqrt(float(np.mean(np.square(errors)))) <= 0.10, errors
    assert max(errors) <= 0.3, errors


def test_similarity_bar(outcomes):
    similarity = _of(outcomes, "similarity")
    accepted = [o for o in similarity if o.accepted]
    assert len(similarity) == 5 and len(accepted) >= 4, [o.note for o in similarity if not o.accepted]
    for outcome in accepted:
        errors = outcome.errors()
        assert errors["rotation"] <= 0.1 and errors["scale"] <= 0.2 and errors["point"] <= 0.3, \
            (outcome.case.name, errors)


def test_cross_modal_bar(outcomes):
    crossmodal = _of(outcomes, "crossmodal-bar")
    assert len(crossmodal) == 2 and all(o.accepted for o in crossmodal), [o.note for o in crossmodal]
    for outcome in crossmodal:
        errors = outcome.errors()
        assert errors["rotation"] <= 0.1 and errors["point"] <= 0.3, (outcome.case.name, errors)


def test_unrelated_pairs_never_succeed(outcomes):
    unrelated = [o for o in outcomes if not o.case.related]
    assert len(unrelated) == 7
    assert not [o.case.name for o in unrelated if o.accepted]


def test_uncertainty_covers_the_true_error(outcomes):
    checks = [flag for o in outcomes if o.accepted for flag in o.coverage().values()]
    assert len(checks) >= 36  # (shift x, y) per translation, + rotation, scale per similarity
    assert np.mean(checks) >= 0.9, np.mean(checks)


@pytest.fixture(scope="module")
def similarity_pair() -> cases.Case:
    return cases.similarity_case("astronaut", np.random.default_rng(3))


def _core(case: cases.Case) -> RegistrationCore:
    core = RegistrationCore()
    core.put_image("ref", case.reference, case.reference_px_um, {})
    core.put_image("tgt", case.target, case.target_px_um, {})
    return core


def test_prior_met_or_refused(similarity_pair):
    core = _core(similarity_pair)
    truth_rotation = similarity_pair.extra["rotation_deg"]
    request = {"reference": "ref", "target": "tgt", "model": "similarity"}
    good = core.register({**request, "prior": {"rotation_deg": truth_rotation + 0.5, "scale": 1.0,
                                               "scale_tolerance": 0.2}})
    assert good.success, good.warnings
    bad = core.register({**request, "prior": {"rotation_deg": truth_rotation + 5.0,
                                              "rotation_tolerance_deg": 1.0}})
    assert not bad.success
    assert any("prior not met" in w for w in bad.warnings)
    assert core.last_good_result.matrix == good.matrix  # the refused one did not replace it
    shifted = core.register({**request, "prior": {"shift_px": [good.shift_px[0] + 10, good.shift_px[1]]}})
    assert not shifted.success and any("shift" in w for w in shifted.warnings)


def test_peak_on_the_edge_of_the_search_is_refused():
    case = cases.translation_case("camera", np.random.default_rng(8))
    shift = float(np.hypot(*case.truth[:2, 2]))
    core = _core(case)
    result = core.register({"reference": "ref", "target": "tgt", "max_shift_px": shift - 2.0})
    assert not result.success
    assert any("edge of the searched shifts" in w for w in result.warnings)
    result = core.register({"reference": "ref", "target": "tgt", "max_shift_px": shift + 10})
    assert result.success, result.warnings


def test_every_result_carries_uncertainty_and_an_entry_covariance(similarity_pair):
    core = _core(similarity_pair)
    for model in ("translation", "similarity"):
        result = core.register({"reference": "ref", "target": "tgt", "model": model})
        sigma = result.uncertainty
        assert set(sigma.as_dict()) == {"shift_px", "rotation_deg", "scale", "point"}
        assert all(math.isfinite(v) and v >= 0 for v in [*sigma.shift_px, sigma.rotation_deg, sigma.scale])
        covariance = np.array(result.covariance)
        assert covariance.shape == (6, 6) and np.allclose(covariance, covariance.T)
        assert np.linalg.eigvalsh(covariance).min() >= -1e-12


def test_registration_uncertainty_reaches_the_mapper(similarity_pair):
    """What smart_register does: the Register covariance goes into SetTransform, and Map's
    uncertainty of the target centre is then the registration's own."""
    result = _core(similarity_pair).register({"reference": "ref", "target": "tgt", "model": "similarity"})
    mapper = CoordMapperCore()
    reply = result.as_dict()  # as the macro reads Register's JSON reply
    mapper.set_transform(SetTransformArgs.model_validate(
        {"from": "tgt", "to": "ref", "matrix": reply["matrix"], "covariance": reply["covariance"],
         "from_unit": "px", "to_unit": "px"}))
    centre = reply["uncertainty"]["point"]
    mapped = mapper.map_points(MapArgs.model_validate({"from": "tgt", "to": "ref", "points": [centre]}))
    expected = math.hypot(*result.uncertainty.shift_px)
    assert mapped.uncertainty[0] == pytest.approx(expected, rel=1e-3)


def test_precision_limits_refuse_imprecise_matches(similarity_pair):
    core = _core(similarity_pair)
    request = {"reference": "ref", "target": "tgt", "model": "similarity"}
    result = core.register(request)
    assert result.success
    tight = core.register({**request, "max_sigma_px": result.uncertainty.shift_px[0] / 2})
    assert not tight.success and any("not precise enough" in w for w in tight.warnings)
