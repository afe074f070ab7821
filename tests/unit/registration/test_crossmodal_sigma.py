"""The contained (SEM field in a camera frame) registration's position sigma must cover its
centre error.

The patch fit's sigma alone (median 0.033 camera px on the tuning split) left 13 % of the
centre errors (per axis) beyond 2 sigma and some at 4.5 sigma: the two instruments' different
drawing leaves ~0.04 px rms in the position of the final answer whatever the fit says
(``contained.POSITION_MODEL_SIGMA_PX``, docs/registration.md "Uncertainty"). These are the
tuning cases (renderer seeds 1-3, the stream of ``benchmarks/study_crossmodal_scale tuning``)
where that sigma was farthest off: 4.35 and 4.47 sigma (x), 2.5-2.6 sigma for three more,
plus the two first ones of the stream as ordinary cases. Measured without the term: largest
4.5 sigma, 7 of 12 axes within 2 (fails both bounds below); with it: largest 3.0 sigma, 10 of
12 within 2. ~5 s. Tuning-split scenes only.
"""

from __future__ import annotations

import numpy as np

from benchmarks.corpus import cases, evaluate

TAIL_CASES = ((0, 1), (0, 2), (6, 2), (8, 1), (12, 2), (14, 3))
"""(stream index, renderer seed) of ``study_crossmodal_scale.tuning_cases``; all ``bar``."""


def _ratios() -> np.ndarray:
    ratios = []
    for index, seed in TAIL_CASES:
        case = cases.crossmodal_case(seed, "bar", np.random.default_rng(7000 + 10 * index + seed))
        assert case.split == "tuned"
        outcome = evaluate.run_ours(case)
        assert outcome.accepted, outcome.note
        errors = outcome.errors()
        sigma = outcome.sigma["shift_px"]
        ratios += [errors["dx"] / sigma[0], errors["dy"] / sigma[1]]
    return np.abs(ratios)


def test_contained_shift_sigma_covers_the_centre_error():
    ratios = _ratios()
    assert ratios.max() <= 3.5, np.round(ratios, 2)
    assert np.mean(ratios <= 2.0) >= 0.75, np.round(ratios, 2)
    # Not covered by inflating it: these are the tail cases, some must come near 2 sigma.
    assert ratios.max() >= 1.5, np.round(ratios, 2)
