"""RegistrationDS against what a user would otherwise call, same inputs, same run.

- translation: 2048x2048 uint16 frames (what a camera delivers), sub-pixel shift made by a
  Fourier shift of a larger image (so the crops are not periodic), Poisson-like noise;
  baseline ``skimage.registration.phase_cross_correlation(upsample_factor=100)``, also fed
  float32 copies so the ratio is not only about the input type. Timed two ways, each call
  after an idle pause (``_idle``) and each library in a loop of its own calls (``_loop``);
  the headline figure is the lower ratio of the two.
- similarity: 1024x1024 micrograph rotated, scaled, shifted, with noise; baseline
  ``imreg_dft.similarity(numiter=3)`` (the reference SMART tool's method), the two timed
  alternately (:func:`benchmarks.harness.paired_times`).
Accuracy of both is printed in the note: a speed-up at worse accuracy would not count.
- accuracy: the whole corpus of :mod:`benchmarks.corpus` (real images under real-space
  transforms, the independent cross-modal renderer, unrelated pairs), ours and the usual
  libraries on the same cases; the tables go to ``run/bench/registration_accuracy.md``
  (per split and per image source) and are printed.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from benchmarks.harness import SETTLE_S, Report, best_time, looped_times, paired_times
from servers.RegistrationDS.core import RegistrationCore
from servers.RegistrationDS.similarity import rotation_and_scale, similarity_matrix, warp

ACCURACY_TABLE = Path(__file__).resolve().parent.parent / "run" / "bench" / "registration_accuracy.md"


def _fourier_shift(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.fftfreq(image.shape[1])[None, :]
    return np.fft.ifft2(np.fft.fft2(image) * np.exp(-2j * np.pi * (kx * dx + ky * dy))).real


def _translation_inputs(rng: np.random.Generator):
    base = cv2.resize(data.camera().astype(np.float32), (2176, 2176), interpolation=cv2.INTER_CUBIC)
    base = base * 150 + 2000  # 16-bit camera-like levels
    dx, dy = 13.37, -7.61
    shifted = _fourier_shift(base.astype(np.float64), dx, dy)
    crop = slice(64, 64 + 2048)
    frames = []
    for image in (base, shifted):
        noisy = image[crop, crop] + rng.normal(0, 0.02 * float(base.std()), (2048, 2048))
        frames.append(np.clip(noisy, 0, 65535).astype(np.uint16))
    return frames[0], frames[1], (-dx, -dy)


def bench_translation(report: Report) -> None:
    from skimage.registration import phase_cross_correlation

    ref, tgt, truth = _translation_inputs(np.random.default_rng(1))
    core = RegistrationCore()
    core.put_image("ref", ref, 1.0, {})
    core.put_image("tgt", tgt, 1.0, {})
    args = {"reference": "ref", "target": "tgt", "upsample": 100}
    result = core.register(args)
    our_err = math.hypot(result.shift_px[0] - truth[0], result.shift_px[1] - truth[1])

    def skimage_uint16():
        return phase_cross_correlation(ref, tgt, upsample_factor=100)

    # Two ways a call meets the machine, both timed alternately with skimage (a change of load
    # reaches both libraries). "idle": each call after SETTLE_S idle, as a Register at a beamline
    # follows a camera frame. "loop": each call right after a call of the same library, as in a
    # script's loop. skimage is much slower in the first: its 32-64 MB arrays go back to the
    # system after every call and their fresh pages cost more after an idle pause (with glibc
    # told to keep freed memory the two modes took the same time; docs/registration.md,
    # "Translation speed"). That is the environment more than the method, so the bar's figure
    # is the lower ratio of the two.
    ours, base16, ratio = paired_times(lambda: core.register(args), skimage_uint16, rounds=7)
    _, _, ratio_no_pause = paired_times(lambda: core.register(args), skimage_uint16, rounds=5, settle_s=0.0)
    loop_ours, loop_theirs, loop_ratio = looped_times(lambda: core.register(args), skimage_uint16,
                                                      rounds=5, calls=3)

    ref32, tgt32 = ref.astype(np.float32), tgt.astype(np.float32)

    def skimage_float32():
        return phase_cross_correlation(ref32, tgt32, upsample_factor=100)

    base32 = best_time(skimage_float32, repeat=3)
    shift = skimage_uint16()[0]
    sk_err = math.hypot(shift[1] - truth[0], shift[0] - truth[1])
    common = (f"error ours {our_err:.4f} px vs skimage {sk_err:.4f} px (truth {truth[0]:.2f}, {truth[1]:.2f}); "
              f"ours includes windowing, confidence, uncertainty and the full Register bookkeeping")
    idle_note = (f"each call after {SETTLE_S} s idle, alternated with skimage, ratio = median of 7 per-round "
                 f"ratios; alternated without the idle pause {ratio_no_pause:.1f}x; {common}")
    loop_note = ("each library called back to back with itself: 5 rounds of 3 timed calls after one untimed, "
                 "the rounds alternating which library goes first; medians of the round medians and of the "
                 f"per-round ratios; skimage on float32 copies of the frames, also back to back (median of "
                 f"3): {base32 * 1000:.0f} ms, ratio {base32 / loop_ours:.1f}x; {common}")
    report.add("registration_translation_2048_up100_idle", ours * 1000, "ms", base16 * 1000, ratio, idle_note)
    report.add("registration_translation_2048_up100_loop", loop_ours * 1000, "ms", loop_theirs * 1000,
               loop_ratio, loop_note)
    lower = ("loop", loop_ours, loop_theirs, loop_ratio) if loop_ratio <= ratio else ("idle", ours, base16, ratio)
    report.add("registration_translation_2048_up100", lower[1] * 1000, "ms", lower[2] * 1000, lower[3],
               f"the bar's figure (5x): the lower of the two timings, here _{lower[0]} "
               f"(_idle {ratio:.1f}x, _loop {loop_ratio:.1f}x); skimage's own time differs between them "
               f"({base16 * 1000:.0f} ms after idle, {loop_theirs * 1000:.0f} ms in a loop) mostly through "
               f"the page faults of its large arrays, see docs/registration.md")


def _similarity_inputs(rng: np.random.Generator):
    image = cv2.resize(data.astronaut()[..., 1].astype(np.float32), (1400, 1400), interpolation=cv2.INTER_CUBIC)
    h, w = image.shape
    truth_full = similarity_matrix(17.3, 1.062, ((w - 1) / 2, (h - 1) / 2), (9.4, -5.7))
    target_full = warp(image, np.linalg.inv(truth_full), image.shape)
    y0 = x0 = (h - 1024) // 2
    to_crop = np.eye(3)
    to_crop[:2, 2] = (-x0, -y0)
    truth = to_crop @ truth_full @ np.linalg.inv(to_crop)
    ref = image[y0:y0 + 1024, x0:x0 + 1024] + rng.normal(0, 4, (1024, 1024))
    tgt = target_full[y0:y0 + 1024, x0:x0 + 1024] + rng.normal(0, 4, (1024, 1024))
    return ref.astype(np.float32), tgt.astype(np.float32), truth


def _errors(matrix: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    rotation, scale = rotation_and_scale(matrix)
    true_rotation, true_scale = rotation_and_scale(truth)
    centre = np.array([511.5, 511.5, 1.0])
    return (abs(rotation - true_rotation), abs(scale / true_scale - 1) * 100,
            float(np.linalg.norm((matrix @ centre - truth @ centre)[:2])))


def bench_similarity(report: Report) -> None:
    import imreg_dft

    ref, tgt, truth = _similarity_inputs(np.random.default_rng(2))
    core = RegistrationCore()
    core.put_image("ref", ref, 1.0, {})
    core.put_image("tgt", tgt, 1.0, {})
    args = {"reference": "ref", "target": "tgt", "model": "similarity"}
    our_errors = _errors(core.register(args).matrix_array, truth)

    baseline_result = {}

    def baseline():
        baseline_result.update(imreg_dft.similarity(ref, tgt, numiter=3))

    # alternated rounds after a warm-up of each: timed in separate blocks (ours, then a single cold
    # imreg_dft call) the ratio followed the load between the blocks (12x and 21x in two
    # consecutive runs on the loaded 2-core machine)
    ours, base, ratio = paired_times(lambda: core.register(args), baseline, rounds=3)
    # imreg_dft: tgt transformed by (angle, scale, tvec) about the centre matches ref.
    angle, scale = float(baseline_result["angle"]), float(baseline_result["scale"])
    ty, tx = (float(v) for v in baseline_result["tvec"])
    centre = (511.5, 511.5)
    their_matrix = similarity_matrix(-angle, scale, centre, (tx, ty))
    alt_matrix = similarity_matrix(angle, scale, centre, (tx, ty))
    their_errors = min(_errors(their_matrix, truth), _errors(alt_matrix, truth), key=lambda e: e[0])
    note = (f"errors ours rot {our_errors[0]:.4f} deg, scale {our_errors[1]:.4f} %, shift {our_errors[2]:.3f} px; "
            f"imreg_dft rot {their_errors[0]:.4f} deg, scale {their_errors[1]:.4f} %, "
            f"shift {their_errors[2]:.3f} px (its angle sign convention tried both ways); median times and "
            "median per-round ratio of 3 alternated rounds after one warm-up call each")
    report.add("registration_similarity_1024", ours * 1000, "ms", base * 1000, ratio, note)


def bench_rotation_range(report: Report) -> None:
    """The contained search (SEM field in a camera frame) with the rotation known to +-10 deg,
    against the same search over the whole circle: what ``rotation_range_deg`` saves."""
    from simulation.geometry import apply
    from tests.unit.registration.test_sem_camera import _rotation_scale, _scene

    frame, camera_px, sem, truth = _scene(4, (250.0, -180.0))
    true_rotation, _ = _rotation_scale(truth)
    core = RegistrationCore()
    core.put_image("camera", frame, camera_px, {})
    core.put_image("sem", sem.image, sem.pixel_size_um, {})
    full = {"reference": "camera", "target": "sem", "model": "similarity"}
    ranged = {**full, "rotation_range_deg": [true_rotation - 10.0, true_rotation + 10.0]}
    h, w = sem.image.shape
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float)

    def error(args: dict) -> float:
        result = core.register(args)
        assert result.success, result.warnings
        return float(np.abs(apply(result.matrix_array, corners) - apply(truth, corners)).max())

    errors = (error(ranged), error(full))
    ours, base, ratio = paired_times(lambda: core.register(ranged), lambda: core.register(full), rounds=3)
    report.add("registration_contained_rotation_range", ours * 1000, "ms", base * 1000, ratio,
               f"SEM field (4096 px, 20 nm) in a 2048 px camera frame, seed 4; rotation_range_deg +-10 deg "
               f"vs the whole circle; largest corner error {errors[0]:.3f} vs {errors[1]:.3f} camera px")


def bench_accuracy(report: Report) -> None:
    """The accuracy corpus: tables per split and per source, and the headline figures."""
    from benchmarks.corpus import cases, evaluate

    outcomes = evaluate.run_all(cases.corpus())
    by_split = evaluate.markdown(evaluate.summarise(outcomes))
    by_source = evaluate.markdown(evaluate.summarise(outcomes, by="source"))
    ACCURACY_TABLE.parent.mkdir(parents=True, exist_ok=True)
    ACCURACY_TABLE.write_text("# Registration accuracy corpus (make bench)\n\nErrors: median / 95th pct / max "
                              "over accepted related cases.\n\n## Per split\n\n" + by_split
                              + "\n\n## Per image source\n\n" + by_source + "\n")
    print(by_split, flush=True)
    ours = [o for o in outcomes if o.method == "ours"]
    skimage = [o for o in outcomes if o.method == "skimage"]
    for split in ("tuned", "held-out"):
        mine = evaluate.rms_shift([o for o in ours if o.case.kind == "translation" and o.case.split == split])
        theirs = evaluate.rms_shift([o for o in skimage if o.case.kind == "translation" and o.case.split == split])
        accepted = [o for o in ours if o.case.kind == "translation" and o.case.split == split]
        report.add(f"registration_accuracy_translation_rms_{split}", mine, "px", theirs, theirs / mine,
                   f"translation cases (real images, real-space sub-pixel shift, 2 % noise, upsample 100), "
                   f"{split} sources; ours over the {sum(o.accepted for o in accepted)} of {len(accepted)} it "
                   f"accepted, skimage phase_cross_correlation over all; table in {ACCURACY_TABLE.name}")
    unrelated = [o for o in ours if not o.case.related]
    report.add("registration_accuracy_false_successes", sum(o.accepted for o in unrelated), "cases", None, None,
               f"of {len(unrelated)} unrelated pairs (translation, similarity, cross-modal)")
    checks = [flag for o in ours if o.accepted for flag in o.coverage().values()]
    report.add("registration_accuracy_coverage", 100.0 * float(np.mean(checks)), "%", None, None,
               "fraction of (accepted case, quantity) whose true error lies within 2 reported sigmas")


def run(report: Report) -> None:
    bench_accuracy(report)
    bench_translation(report)
    bench_similarity(report)
    bench_rotation_range(report)


if __name__ == "__main__":
    figures = Report()
    run(figures)
    for name, figure in figures.figures.items():
        print(f"{name}: {figure.value:.1f} {figure.unit}; baseline {figure.baseline:.1f} {figure.unit}; "
              f"ratio {figure.ratio:.1f}x\n    {figure.note}")
