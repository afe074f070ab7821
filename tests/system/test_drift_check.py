"""What the periodic drift check registers the reference with (``drift_check_search``): the model
``smart_register`` stored it with, within a few degrees of its rotation. System tier because the
macros' support imports Tango; no device runs."""

from __future__ import annotations

from macros.smart_support import DRIFT_ROTATION_DEG, drift_check_search


def test_the_drift_check_uses_the_model_and_rotation_of_the_stored_registration() -> None:
    assert drift_check_search(12.0, "affine") == ("affine", [12.0 - DRIFT_ROTATION_DEG, 12.0 + DRIFT_ROTATION_DEG])
    assert drift_check_search(None, "translation") == ("translation", None)


def test_a_registration_stored_before_the_model_was_kept_is_checked_as_a_similarity() -> None:
    assert drift_check_search(-3.0, None) == ("similarity", [-3.0 - DRIFT_ROTATION_DEG, -3.0 + DRIFT_ROTATION_DEG])
