"""CoordMapperCore: composition, the moving camera, fits with uncertainty, persistence, refusals."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from servers.common.errors import BadArgument, NotFound, NotReady, SmartError
from servers.common.jsonargs import parse_args
from servers.common.pointfit import apply_matrix
from servers.CoordMapperDS.args import CalibrateCameraArgs, FitTransformArgs, MapArgs, SetTransformArgs
from servers.CoordMapperDS.core import CoordMapperCore


def set_args(**kw: object) -> SetTransformArgs:
    return SetTransformArgs.model_validate(kw)


def map_args(**kw: object) -> MapArgs:
    return MapArgs.model_validate(kw)


def fit_args(**kw: object) -> FitTransformArgs:
    return FitTransformArgs.model_validate(kw)


def random_affine(rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    matrix = np.eye(3)
    matrix[:2, :2] = rng.normal(size=(2, 2)) * scale + np.eye(2) * scale
    matrix[:2, 2] = rng.uniform(-100, 100, 2)
    return matrix


def core_with(*edges: tuple[str, str, np.ndarray]) -> CoordMapperCore:
    core = CoordMapperCore()
    for source, target, matrix in edges:
        core.set_transform(set_args(**{"from": source, "to": target, "matrix": matrix.tolist()}))
    return core


CALIBRATIONS = {
    "rotated": np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]]) * 5.5e-4,
    "flipped": np.array([[5.5e-4, 0.0], [0.0, -5.5e-4]]),
    "sheared": np.array([[5.5e-4, 0.8e-4], [-0.3e-4, 6.1e-4]]),
    "rotated_flipped_sheared": np.array([[-2.0e-4, 5.0e-4], [5.3e-4, 1.2e-4]]),
}


# ----------------------------------------------------------------------------- composition
def test_composition_forwards_and_backwards_matches_the_matrix_product() -> None:
    rng = np.random.default_rng(4)
    for _ in range(50):
        ab, cb, cd = random_affine(rng), random_affine(rng), random_affine(rng)
        core = core_with(("a", "b", ab), ("c", "b", cb), ("c", "d", cd))  # b <- c is used backwards
        points = rng.uniform(-1000, 1000, (20, 2))
        expected = apply_matrix(cd @ np.linalg.inv(cb) @ ab, points)
        result = core.map_points(map_args(**{"from": "a", "to": "d", "points": points.tolist()}))
        got = np.array(result.points)
        assert np.max(np.abs(got - expected)) <= 1e-9 * np.max(np.abs(expected))
        back = core.map_points(map_args(**{"from": "d", "to": "a", "points": got.tolist()}))
        assert np.max(np.abs(np.array(back.points) - points)) <= 1e-9 * np.max(np.abs(points))
        assert result.path == ("a -> b", "b -> c", "c -> d")
        assert result.uncertainty == (0.0,) * 20


def test_identity_map_and_units_in_result() -> None:
    core = core_with(("sem", "stage", random_affine(np.random.default_rng(0), 1e-3)))
    same = core.map_points(map_args(**{"from": "sem", "to": "sem", "points": [[1.5, 2.5]]}))
    assert same.points == ((1.5, 2.5),) and same.unit == "px"
    assert core.map_points(map_args(**{"from": "sem", "to": "stage", "points": [[1, 2]]})).unit == "mm"


# ----------------------------------------------------------------------------- moving camera
@pytest.mark.parametrize("name", sorted(CALIBRATIONS))
def test_moving_camera_formula(name: str) -> None:
    linear = CALIBRATIONS[name]
    beam = np.array([612.0, 488.5])
    rng = np.random.default_rng(5)
    core = CoordMapperCore()
    core.set_beam_position(beam.tolist())
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = [3.0, -1.0]  # translation of a calibration matrix does not define A
    core.set_transform(set_args(**{"from": "camera", "to": "stage", "matrix": matrix.tolist()}))
    for _ in range(20):
        position = rng.uniform(-20, 20, 2)
        pixels = rng.uniform(0, 1224, (10, 2))
        result = core.map_points(map_args(**{"from": "camera", "to": "stage", "points": pixels.tolist(),
                                             "stage_position": position.tolist()}))
        expected = position + (pixels - beam) @ linear.T
        np.testing.assert_allclose(result.points, expected, rtol=1e-12, atol=1e-12)
        back = core.map_points(map_args(**{"from": "stage", "to": "camera", "points": expected.tolist(),
                                           "stage_position": position.tolist()}))
        np.testing.assert_allclose(back.points, pixels, atol=1e-7)
    # the beam pixel of any frame maps to that frame's stage position
    beam_hit = core.map_points(map_args(**{"from": "camera", "to": "stage", "points": [beam.tolist()],
                                           "stage_position": [1.25, -3.5]}))
    np.testing.assert_allclose(beam_hit.points, [[1.25, -3.5]], atol=1e-12)


@pytest.mark.parametrize("name", sorted(CALIBRATIONS))
def test_registered_image_maps_through_the_camera_frame_it_was_taken_in(name: str) -> None:
    linear = CALIBRATIONS[name]
    beam = np.array([640.0, 512.0])
    frame_position = np.array([12.5, -4.0])
    sem_to_camera = random_affine(np.random.default_rng(6), 0.3)
    core = CoordMapperCore()
    core.set_beam_position(beam.tolist())
    core.set_transform(set_args(**{"from": "stage", "to": "camera",
                                   "matrix": np.linalg.inv(np.block([[linear, np.zeros((2, 1))],
                                                                      [np.zeros((1, 2)), np.ones((1, 1))]])).tolist()}))
    core.set_transform(set_args(**{"from": "sem", "to": "camera", "matrix": sem_to_camera.tolist(),
                                   "stage_position": frame_position.tolist()}))
    sem_points = np.array([[10.0, 20.0], [2000.0, 1500.0]])
    camera_px = apply_matrix(sem_to_camera, sem_points)
    expected = frame_position + (camera_px - beam) @ linear.T
    # a Map's own stage_position does not change an intermediate camera visit
    for call_position in (None, [99.0, 99.0]):
        kw = {"from": "sem", "to": "stage", "points": sem_points.tolist()}
        if call_position is not None:
            kw["stage_position"] = call_position
        np.testing.assert_allclose(core.map_points(map_args(**kw)).points, expected, rtol=1e-12)
    # the same sample point seen in the live camera at another stage position
    live_position = frame_position + [0.2, -0.1]
    live = core.map_points(map_args(**{"from": "sem", "to": "camera", "points": sem_points.tolist(),
                                       "stage_position": live_position.tolist()}))
    np.testing.assert_allclose(live_position + (np.array(live.points) - beam) @ linear.T, expected,
                               rtol=1e-12)


def test_camera_frames_at_different_positions_go_through_the_calibration() -> None:
    core = CoordMapperCore()
    core.set_beam_position([500.0, 500.0])
    core.set_transform(set_args(**{"from": "sem", "to": "camera", "matrix": np.eye(3).tolist(),
                                   "stage_position": [0.0, 0.0]}))
    core.set_transform(set_args(**{"from": "xrf", "to": "camera", "matrix": np.eye(3).tolist(),
                                   "stage_position": [0.1, 0.0]}))
    with pytest.raises(NotReady, match="calibration"):
        core.map_points(map_args(**{"from": "sem", "to": "xrf", "points": [[500, 500]]}))
    calibration = np.diag([0.001, 0.001, 1.0])
    core.set_transform(set_args(**{"from": "camera", "to": "stage", "matrix": calibration.tolist()}))
    result = core.map_points(map_args(**{"from": "sem", "to": "xrf", "points": [[500, 500]]}))
    # stage moved +0.1 mm = 100 px in x, so the sample point appears 100 px to the left
    np.testing.assert_allclose(result.points, [[400.0, 500.0]], atol=1e-9)


def test_camera_needs_a_stage_position_and_a_beam_position() -> None:
    core = CoordMapperCore()
    core.set_transform(set_args(**{"from": "camera", "to": "stage", "matrix": np.diag([1e-3, 1e-3, 1]).tolist()}))
    with pytest.raises(NotReady, match="BeamPosition"):
        core.map_points(map_args(**{"from": "camera", "to": "stage", "points": [[1, 1]],
                                    "stage_position": [0, 0]}))
    core.set_beam_position([0, 0])
    with pytest.raises(NotReady, match="stage_position"):
        core.map_points(map_args(**{"from": "camera", "to": "stage", "points": [[1, 1]]}))
    core.set_transform(set_args(**{"from": "camera", "to": "stage", "matrix": np.diag([1e-3, 1e-3, 1]).tolist(),
                                   "stage_position": [5.0, 6.0]}))  # stored default
    result = core.map_points(map_args(**{"from": "camera", "to": "stage", "points": [[1000, 0]]}))
    np.testing.assert_allclose(result.points, [[6.0, 6.0]])


def test_calibrate_camera_from_stage_steps_and_image_shifts() -> None:
    rng = np.random.default_rng(8)
    linear = CALIBRATIONS["rotated_flipped_sheared"]
    steps = []
    for dx_stage in (-0.05, 0.0, 0.05):
        for dy_stage in (-0.05, 0.0, 0.05):
            stage_step = np.array([dx_stage, dy_stage])
            shift = -np.linalg.solve(linear, stage_step) + rng.normal(0, 0.05, 2)
            steps.append([*stage_step, *shift])
    core = CoordMapperCore()
    core.set_beam_position([320.0, 240.0])
    result = core.calibrate_camera(CalibrateCameraArgs.model_validate({"steps": steps, "model": "affine"})).as_dict()
    np.testing.assert_allclose(np.array(result["matrix"])[:2, :2], linear, rtol=2e-3, atol=2e-7)
    assert result["mirrored"] is True
    mapped = core.map_points(map_args(**{"from": "camera", "to": "stage", "points": [[420.0, 240.0]],
                                         "stage_position": [1.0, 1.0]}))
    truth = np.array([1.0 + 100 * linear[0, 0], 1.0 + 100 * linear[1, 0]])
    error = np.linalg.norm(np.array(mapped.points[0]) - truth)
    assert 0 < mapped.uncertainty[0] < 3e-5  # 0.05 px noise on ~100 px shifts: ~1e-5 mm at 100 px
    assert error <= 3 * mapped.uncertainty[0]


def test_fit_transform_camera_to_stage_reports_the_implied_beam_position() -> None:
    linear = CALIBRATIONS["rotated"]
    beam, position = np.array([300.0, 200.0]), np.array([4.0, 5.0])
    pixels = np.array([[0.0, 0.0], [600.0, 0.0], [0.0, 400.0], [600.0, 400.0], [300.0, 200.0]])
    stage = position + (pixels - beam) @ linear.T
    core = CoordMapperCore()
    core.set_beam_position([0.0, 0.0])  # deliberately wrong: the fit says where the beam really is
    result = core.fit_transform(fit_args(**{"from": "camera", "to": "stage", "model": "similarity",
                                            "pairs": np.hstack([pixels, stage]).tolist(),
                                            "stage_position": position.tolist()})).as_dict()
    np.testing.assert_allclose(result["implied_beam_position"], beam, atol=1e-6)
    assert result["rms"] < 1e-12


# ----------------------------------------------------------------------------- uncertainty
def test_fit_uncertainty_covers_the_true_error_through_a_two_edge_chain() -> None:
    """sem -fit-> camera(S) -calibration-> stage: true stage error within 2 sigma >= 95 %."""
    rng = np.random.default_rng(2024)
    inside = []
    linear = CALIBRATIONS["rotated_flipped_sheared"]
    for _ in range(500):
        sem_to_camera = random_affine(rng, 0.25)
        sem = rng.uniform(0, 4096, (10, 2))
        camera = apply_matrix(sem_to_camera, sem) + rng.normal(0, 0.5, (10, 2))
        core = CoordMapperCore()
        core.set_beam_position([600.0, 500.0])
        core.set_transform(set_args(**{"from": "camera", "to": "stage",
                                       "matrix": np.block([[linear, np.zeros((2, 1))], [0, 0, 1]]).tolist()}))
        core.fit_transform(fit_args(**{"from": "sem", "to": "camera", "model": "affine",
                                       "pairs": np.hstack([sem, camera]).tolist(), "stage_position": [1, 2]}))
        queries = rng.uniform(0, 4096, (10, 2))
        result = core.map_points(map_args(**{"from": "sem", "to": "stage", "points": queries.tolist()}))
        truth = np.array([1, 2]) + (apply_matrix(sem_to_camera, queries) - [600, 500]) @ linear.T
        error = np.linalg.norm(np.array(result.points) - truth, axis=1)
        inside.extend(error <= 2 * np.array(result.uncertainty))
    coverage = float(np.mean(inside))
    print(f"observed 2-sigma coverage through the chain: {coverage:.4f} over {len(inside)} points")
    assert 0.95 <= coverage <= 0.995


def test_propagation_matches_monte_carlo_with_a_backward_edge_and_the_camera_detour() -> None:
    rng = np.random.default_rng(11)
    covariance = np.diag([1e-6, 2e-6, 0.04, 3e-6, 1e-6, 0.09])
    sem_to_camera = random_affine(rng, 0.3)
    linear = CALIBRATIONS["sheared"]
    camera_cov = np.diag([1e-11, 1e-11, 1e-6, 2e-11, 1e-11, 1e-6])
    core = CoordMapperCore()
    core.set_beam_position([500.0, 500.0])
    core.set_transform(set_args(**{"from": "camera", "to": "stage", "covariance": camera_cov.tolist(),
                                   "matrix": np.block([[linear, np.zeros((2, 1))], [0, 0, 1]]).tolist()}))
    core.set_transform(set_args(**{"from": "camera", "to": "sem", "matrix": np.linalg.inv(sem_to_camera).tolist(),
                                   "stage_position": [0, 0], "covariance": covariance.tolist()}))
    query = np.array([[1500.0, 800.0]])
    predicted = core.map_points(map_args(**{"from": "sem", "to": "camera", "points": query.tolist(),
                                            "stage_position": [0.05, -0.02]}))
    samples = []
    for _ in range(4000):
        camera_to_sem = np.linalg.inv(sem_to_camera)
        camera_to_sem[:2] += rng.multivariate_normal(np.zeros(6), covariance).reshape(2, 3)
        # the stated covariance is over the entries of [A | t]; the beam point maps to t + A b
        delta = rng.multivariate_normal(np.zeros(6), camera_cov).reshape(2, 3)
        a = linear + delta[:, :2]
        offset = delta[:, 2] + delta[:, :2] @ [500.0, 500.0]
        camera = apply_matrix(np.linalg.inv(camera_to_sem), query)[0]
        stage = np.array([0, 0]) + a @ (camera - 500) + offset
        # the detour uses the same calibration backwards, so its offset cancels
        samples.append(np.linalg.solve(a, stage - [0.05, -0.02] - offset) + 500)
    observed = np.sqrt(np.trace(np.cov(np.array(samples).T)))
    assert abs(predicted.uncertainty[0] - observed) / observed < 0.06


# ----------------------------------------------------------------------------- limits
def test_within_limits_for_stage_and_other_targets() -> None:
    core = core_with(("sem", "stage", np.diag([0.01, 0.01, 1.0])))
    core.set_transform(set_args(**{"from": "sem", "to": "xrf", "matrix": np.eye(3).tolist()}))
    limits = ((0.0, 5.0), (0.0, 5.0))
    points = [[100, 100], [600, 100], [100, -1]]
    to_stage = core.map_points(map_args(**{"from": "sem", "to": "stage", "points": points}), limits)
    assert to_stage.within_limits == (True, False, False)
    to_xrf = core.map_points(map_args(**{"from": "sem", "to": "xrf", "points": points}), limits)
    assert to_xrf.within_limits == (True, False, False)  # reachability of the same sample points
    core.set_transform(set_args(**{"from": "a", "to": "b", "matrix": np.eye(3).tolist()}))
    isolated = core.map_points(map_args(**{"from": "a", "to": "b", "points": [[0, 0]]}), limits)
    assert isolated.within_limits == (False,) and "within_limits is false" in isolated.warnings[0]
    # unknown limits (none given, or a motor without min/max: infinite) are never "within"
    unlimited = core.map_points(map_args(**{"from": "sem", "to": "stage", "points": points}))
    assert unlimited.within_limits == (False, False, False)
    assert any("limits are unknown" in w for w in unlimited.warnings)
    half_open = core.map_points(map_args(**{"from": "sem", "to": "stage", "points": points}),
                                ((0.0, 5.0), (0.0, float("inf"))))
    assert half_open.within_limits == (False, False, False)


# ----------------------------------------------------------------------------- persistence
def build_rich_core() -> CoordMapperCore:
    rng = np.random.default_rng(21)
    core = CoordMapperCore()
    core.set_beam_position([612.25, 487.75])
    linear = CALIBRATIONS["rotated_flipped_sheared"]
    steps = [[dx, dy, *(-np.linalg.solve(linear, [dx, dy]) + rng.normal(0, 0.05, 2))]
             for dx in (-0.05, 0, 0.05) for dy in (-0.05, 0, 0.05)]
    core.calibrate_camera(CalibrateCameraArgs.model_validate({"steps": steps}))
    sem = rng.uniform(0, 4096, (8, 2))
    camera = apply_matrix(random_affine(rng, 0.2), sem) + rng.normal(0, 0.3, (8, 2))
    core.fit_transform(fit_args(**{"from": "sem", "to": "camera", "pairs": np.hstack([sem, camera]).tolist(),
                                   "stage_position": [3.0, 4.0]}))
    core.set_transform(set_args(**{"from": "xrf", "to": "stage", "matrix": np.diag([1e-4, 1e-4, 1]).tolist(),
                                   "sigma": 2e-4, "from_unit": "px"}))
    core.set_transform(set_args(**{"from": "afm", "to": "sem", "matrix": random_affine(rng).tolist(),
                                   "from_unit": "um"}))
    return core


def test_json_round_trip_gives_identical_map_answers() -> None:
    core = build_rich_core()
    restored = CoordMapperCore()
    restored.from_json(core.to_json())
    assert restored.to_json() == core.to_json()
    points = np.random.default_rng(1).uniform(0, 4000, (50, 2)).tolist()
    for source, target in [("sem", "stage"), ("afm", "xrf"), ("camera", "sem"), ("stage", "afm")]:
        args = map_args(**{"from": source, "to": target, "points": points, "stage_position": [3.5, 4.5]})
        assert restored.map_points(args, ((0, 10), (0, 10))) == core.map_points(args, ((0, 10), (0, 10)))
    assert restored.history() == core.history()
    assert restored.beam_position == core.beam_position


def mutate(text: str, change: object) -> str:
    data = json.loads(text)
    change(data)  # type: ignore[operator]
    return json.dumps(data)


def _singular(d: dict) -> None:
    d["edges"][0]["matrix"] = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]


def _projective(d: dict) -> None:
    d["edges"][0]["matrix"][2] = [0.1, 0, 1]


def _unknown_frame(d: dict) -> None:
    del d["frames"]["sem"]


def _negative_cov(d: dict) -> None:
    d["edges"][-1]["covariance"] = (-np.eye(6)).tolist()


def _other_unit(d: dict) -> None:
    d["stage_unit"] = "um"


def _duplicate(d: dict) -> None:
    d["edges"].append(d["edges"][0])


@pytest.mark.parametrize("damage", [_singular, _projective, _unknown_frame, _negative_cov, _other_unit, _duplicate])
def test_malformed_stored_state_is_refused_and_nothing_changes(damage: object) -> None:
    core = build_rich_core()
    before = core.to_json()
    with pytest.raises(BadArgument):
        core.from_json(mutate(before, damage))
    assert core.to_json() == before


@pytest.mark.parametrize("text", ["", "[]", "{", '{"format": NaN}', "x" * 10])
def test_garbage_state_text_is_refused(text: str) -> None:
    core = build_rich_core()
    before = core.to_json()
    with pytest.raises(BadArgument):
        core.from_json(text)
    assert core.to_json() == before


# ----------------------------------------------------------------------------- refusals
BAD_COMMANDS = [
    ("map", {"from": "nowhere", "to": "stage", "points": [[0, 0]]}, NotFound, "no frame 'nowhere'"),
    ("map", {"from": "sem", "to": "lonely", "points": [[0, 0]]}, NotFound, "no chain"),
    ("set", {"from": "a", "to": "b", "matrix": [[1, 2, 0], [2, 4, 0], [0, 0, 1]]}, BadArgument, "singular"),
    ("set", {"from": "a", "to": "b", "matrix": [[1e-12, 0, 0], [0, 1e3, 0], [0, 0, 1]]}, BadArgument,
     "ill-conditioned"),
    ("set", {"from": "a", "to": "b", "matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 2]]}, BadArgument, "bottom row"),
    ("set", {"from": "sem", "to": "camera", "matrix": np.eye(3).tolist()}, BadArgument, "stage_position"),
    ("set", {"from": "a", "to": "b", "matrix": np.eye(3).tolist(), "stage_position": [0, 0]}, BadArgument,
     "only applies"),
    ("set", {"from": "sem", "to": "stage", "matrix": np.eye(3).tolist(), "from_unit": "um"}, BadArgument,
     "is in px"),
    ("set", {"from": "a", "to": "b", "matrix": np.eye(3).tolist(), "covariance": (-np.eye(6)).tolist()},
     BadArgument, "negative eigenvalue"),
    ("fit", {"from": "a", "to": "b", "pairs": [[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]]}, BadArgument,
     "collinear"),
    ("fit", {"from": "a", "to": "b", "pairs": [[0, 0, 1, 1], [0, 0, 2, 2]], "model": "similarity"},
     BadArgument, "coincident"),
]


@pytest.mark.parametrize(("command", "payload", "error", "message"), BAD_COMMANDS)
def test_bad_commands_raise_and_leave_the_graph_untouched(command: str, payload: dict, error: type,
                                                           message: str) -> None:
    core = build_rich_core()
    core.set_transform(set_args(**{"from": "lonely", "to": "other", "matrix": np.eye(3).tolist()}))
    before, history = core.to_json(), core.history()
    call = {"map": lambda: core.map_points(map_args(**payload)),
            "set": lambda: core.set_transform(set_args(**payload)),
            "fit": lambda: core.fit_transform(fit_args(**payload))}[command]
    with pytest.raises(error, match=message) as caught:
        call()
    assert len(caught.value.desc) > 30  # says what to do, not just what failed
    assert core.to_json() == before and core.history() == history


@pytest.mark.parametrize(("model", "text", "message"), [
    (MapArgs, '{"from": "sem", "to": "stage", "points": [[NaN, 0]]}', "NaN"),
    (MapArgs, '{"from": "sem", "to": "stage", "points": [[1e999, 0]]}', "finite"),
    (MapArgs, '{"from": "sem", "to": "stage", "points": []}', "at least 1"),
    (MapArgs, '{"from": "sem", "to": "stage", "points": [[1, 2, 3]]}', "at most 2"),
    (FitTransformArgs, '{"from": "a", "to": "b", "pairs": [[0, 0, 1, 1], [1, 0, 2, 1]]}', "at least 3"),
    (SetTransformArgs, '{"from": "a", "to": "a", "matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}', "different"),
    (SetTransformArgs, '{"from": "a", "to": "b", "matrix": [[1, 0], [0, 1]]}', "at least 3"),
    (SetTransformArgs, '{"from": "a", "to": "b", "matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "x": 1}',
     "unknown key"),
])
def test_argument_models_refuse_bad_json(model: type, text: str, message: str) -> None:
    with pytest.raises(BadArgument, match=message):
        parse_args(text, model)


def test_core_refuses_nan_points_given_directly() -> None:
    core = build_rich_core()
    args = MapArgs.model_construct(from_="sem", to="stage", points=[[float("nan"), 0.0]], stage_position=None)
    with pytest.raises(BadArgument, match="NaN"):
        core.map_points(args)


# ----------------------------------------------------------------------------- frames and history
def test_remove_frame_and_history() -> None:
    clock = iter(f"2026-01-01T00:00:{i:02d}Z" for i in range(60))
    core = CoordMapperCore(clock=lambda: next(clock))
    core.set_transform(set_args(**{"from": "sem", "to": "stage", "matrix": np.eye(3).tolist()}))
    core.set_transform(set_args(**{"from": "xrf", "to": "sem", "matrix": np.eye(3).tolist()}))
    assert core.frames() == ["stage", "camera", "sem", "xrf"]
    removed = core.remove_frame("sem").as_dict()
    assert removed["removed_edges"] == [["sem", "stage"], ["sem", "xrf"]]
    assert core.frames() == ["stage", "camera", "xrf"]
    with pytest.raises(NotFound):
        core.remove_frame("sem")
    with pytest.raises(BadArgument, match="motor frame"):
        core.remove_frame("stage")
    commands = [(h["command"], h.get("from"), h.get("to")) for h in core.history()]
    assert commands == [("SetTransform", "sem", "stage"), ("SetTransform", "xrf", "sem"),
                        ("RemoveFrame", None, None)]
    assert core.history()[0]["time"] == "2026-01-01T00:00:01Z"
    transforms = json.loads(core.transforms_json())
    assert transforms["edges"] == [] and transforms["frames"]["xrf"] == "px"


def test_concurrent_writers_and_readers_never_see_a_broken_graph() -> None:
    core = build_rich_core()
    errors: list[Exception] = []
    rng = np.random.default_rng(0)
    matrices = [random_affine(rng).tolist() for _ in range(50)]

    def writer() -> None:
        for matrix in matrices:
            core.set_transform(set_args(**{"from": "afm", "to": "sem", "matrix": matrix, "from_unit": "um"}))

    def reader() -> None:
        for _ in range(50):
            try:
                CoordMapperCore().from_json(core.to_json())
                core.map_points(map_args(**{"from": "afm", "to": "stage", "points": [[1, 2]]}))
            except SmartError as exc:  # pragma: no cover - the assertion below reports it
                errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert json.loads(core.transforms_json())["edges"][0]["matrix"] == matrices[-1]


# ------------------------------------------------------------------ refinement with a prior
def test_fit_with_prior_refines_the_camera_chain_and_map_reports_its_uncertainty() -> None:
    """FitTransform with ``prior``: the sem -> camera -> stage chain is the prior, a few noisy
    stage centres refine it; the stored edge carries the posterior covariance, so Map gives
    a finite per-target uncertainty (an exact affine through 3 pairs gives none)."""
    rng = np.random.default_rng(11)
    beam = np.array([640.0, 512.0])
    core = CoordMapperCore()
    core.set_beam_position(beam.tolist())
    core.calibrate_camera(CalibrateCameraArgs.model_validate(
        {"steps": [[0.055, 0, -100, 0], [0, 0.055, 0, 100], [0.055, 0.055, -100, 100], [-0.055, 0, 100, 0]]}))
    sem_to_camera = np.array([[0.0364, 0.0, 300.0], [0.0, 0.0364, 200.0], [0.0, 0.0, 1.0]])
    core.set_transform(set_args(**{"from": "sem", "to": "camera", "matrix": sem_to_camera.tolist(),
                                   "stage_position": [1.0, 2.0], "sigma": 0.05}))
    source = np.array([[500.0, 400.0], [3500.0, 600.0], [2000.0, 3600.0], [3800.0, 3900.0]])
    coarse = np.array(core.map_points(map_args(**{"from": "sem", "to": "stage", "points": source.tolist()})).points)
    offset = np.array([1.5e-4, -0.8e-4])  # the beam position error: one common offset
    measured = coarse + offset + rng.normal(0, 2e-5, coarse.shape)
    pairs = np.hstack([source, measured]).tolist()
    reply = core.fit_transform(fit_args(**{"from": "sem", "to": "stage", "pairs": pairs, "prior": True,
                                           "noise_sigma": 2e-5, "from_unit": "px"})).as_dict()
    assert reply["model"] == "translation" and reply["consistent"]
    assert reply["prior_path"][0].startswith("sem")
    mapped = core.map_points(map_args(**{"from": "sem", "to": "stage", "points": source.tolist()}))
    assert mapped.path == ("sem -> stage",) or len(mapped.path) == 1
    np.testing.assert_allclose(np.array(mapped.points) - coarse, np.tile(offset, (4, 1)), atol=3e-5)
    sigma = np.array(mapped.uncertainty)
    assert np.isfinite(sigma).all() and (sigma < 3e-5).all()
    history = core.history()[-1]
    assert history["command"] == "FitTransform" and history["prior"] is True


def test_fit_with_prior_needs_noise_sigma_and_auto_needs_a_prior() -> None:
    pairs = [[0, 0, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1]]
    with pytest.raises(SmartError, match="noise_sigma"):
        parse_args(json.dumps({"from": "sem", "to": "stage", "pairs": pairs, "prior": True}), FitTransformArgs)
    with pytest.raises(SmartError, match="prior"):
        parse_args(json.dumps({"from": "sem", "to": "stage", "pairs": pairs, "model": "auto"}), FitTransformArgs)
    core = CoordMapperCore()
    with pytest.raises(NotFound):
        core.fit_transform(fit_args(**{"from": "sem", "to": "stage", "pairs": pairs, "prior": True,
                                       "noise_sigma": 1e-5}))
    assert core.transforms() == []
