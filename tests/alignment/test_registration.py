"""Tests of ``fibsem_ophyd.alignment.registration`` on realistic, shot-noise-limited images.

The image pairs come from ``fibsem_ophyd.alignment.synthetic``: two views of one larger,
periodic "sample-like" texture, the moving one shifted by a known sub-pixel amount in Fourier
space (exact for a periodic, band-limited texture), then Poisson noise at a given mean dose.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.fft as sfft

import fibsem_ophyd.alignment as alignment
from fibsem_ophyd.alignment import Registration, RegistrationError, register
from fibsem_ophyd.alignment.synthetic import MARGIN, noisy_pair, sample_texture
from fibsem_ophyd.alignment.synthetic import periodic_blur as _blur
from fibsem_ophyd.alignment.synthetic import shifted_views as views

SMALL = (512, 768)  # rows, cols: the accuracy loops
FULL = (1024, 1536)  # the OpenFIBSEM default frame, one check


def error_px(res: Registration, dx: float, dy: float) -> float:
    return float(np.hypot(res.dx - dx, res.dy - dy))


def run_accuracy(counts: float, n: int = 10, seed: int = 0, **kwargs) -> tuple[float, float]:
    """Median error (px, Euclidean) and minimum score over ``n`` random shifts within +-30 px.

    Two textures, each seen at ``n / 2`` shifts with independent noise.
    """
    rng = np.random.default_rng(seed)
    textures = [
        sample_texture((SMALL[0] + 2 * MARGIN, SMALL[1] + 2 * MARGIN), rng) for _ in range(2)
    ]
    errors, scores = [], []
    for i in range(n):
        ref, mov, dx, dy = noisy_pair(rng, SMALL, counts, big=textures[i % 2])
        res = register(ref, mov, **kwargs)
        errors.append(error_px(res, dx, dy))
        scores.append(res.score)
    return float(np.median(errors)), float(np.min(scores))


# ---------------------------------------------------------------------------------------------
# API and conventions


def test_public_api() -> None:
    assert set(alignment.__all__) >= {"Registration", "RegistrationError", "register"}
    assert issubclass(RegistrationError, ValueError)
    res = Registration(dx=1.0, dy=-2.0, score=0.9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.dx = 3.0  # type: ignore[misc]


def test_shift_m_scales_by_pixel_size() -> None:
    res = Registration(dx=3.0, dy=-2.5, score=1.0)
    assert res.shift_m(5e-9) == pytest.approx((15e-9, -12.5e-9))


def test_sign_convention_right_and_up() -> None:
    """Content moved +3 columns (right) and -2 rows (up) gives dx=+3, dy=+2."""
    rng = np.random.default_rng(1)
    big = sample_texture((SMALL[0] + 2 * MARGIN, SMALL[1] + 2 * MARGIN), rng)
    r0, c0 = MARGIN, MARGIN
    ref = big[r0 : r0 + SMALL[0], c0 : c0 + SMALL[1]]
    # moving[y, x] = ref[y + 2, x - 3]: what was at (row, col) is now at (row - 2, col + 3)
    mov = big[r0 + 2 : r0 + 2 + SMALL[0], c0 - 3 : c0 - 3 + SMALL[1]]
    res = register(ref, mov)
    assert res.dx == pytest.approx(3.0, abs=0.01)
    assert res.dy == pytest.approx(2.0, abs=0.01)
    assert res.score > 0.99
    back = register(mov, ref)
    assert (back.dx, back.dy) == pytest.approx((-3.0, -2.0), abs=0.01)


@pytest.mark.parametrize("shift", [(0.0, 0.0), (0.5, -0.5), (-29.7, 12.3), (25.4, -28.8)])
def test_noise_free_subpixel_shifts_are_exact(shift: tuple[float, float]) -> None:
    """Without noise the error is far below the targets, also for the largest shifts.

    This checks the window-overlap correction: large shifts are not pulled towards zero. The
    score only drops with the overlap of the windowed views (~3 % at 30 px).
    """
    rng = np.random.default_rng(2)
    big = sample_texture((SMALL[0] + 2 * MARGIN, SMALL[1] + 2 * MARGIN), rng)
    rows, cols = shift
    ref, mov = views(big, SMALL, rows, cols)
    res = register(ref, mov)
    assert error_px(res, cols, -rows) < 0.01
    assert res.score > 0.95


def test_integer_dtype_matches_float() -> None:
    rng = np.random.default_rng(3)
    ref, mov, dx, dy = noisy_pair(rng, SMALL, 50)
    a = register(ref.astype(np.uint16), mov.astype(np.uint16))
    b = register(ref.astype(np.float64), mov.astype(np.float64))
    assert (a.dx, a.dy) == pytest.approx((b.dx, b.dy), abs=1e-3)
    assert a.score == pytest.approx(b.score, abs=1e-3)


# ---------------------------------------------------------------------------------------------
# accuracy targets under shot noise (768x512, 10 random shifts within +-30 px)


def test_accuracy_at_50_counts() -> None:
    median_error, min_score = run_accuracy(50)
    assert median_error <= 0.05
    assert min_score > 0.5


def test_accuracy_at_5_counts() -> None:
    median_error, min_score = run_accuracy(5)
    assert median_error <= 0.2
    assert min_score > 0.5


def test_parabolic_only_refinement_meets_the_50_count_target() -> None:
    median_error, _ = run_accuracy(50, n=6, upsample=1)
    assert median_error <= 0.05


def test_full_frame_1536x1024_at_50_counts() -> None:
    rng = np.random.default_rng(4)
    ref, mov, dx, dy = noisy_pair(rng, FULL, 50)
    res = register(ref, mov)
    assert error_px(res, dx, dy) <= 0.05
    assert res.score > 0.5


def test_integer_peak_alone_is_quantised() -> None:
    """Sanity check of the test itself: rounding the true shift costs ~0.4 px, so the
    sub-pixel results above are not an artefact of integer shifts."""
    rng = np.random.default_rng(0)
    errs = []
    for _ in range(10):
        _, _, dx, dy = noisy_pair(rng, (64, 64), 50)
        errs.append(np.hypot(dx - round(dx), dy - round(dy)))
    assert np.median(errs) > 0.2


# ---------------------------------------------------------------------------------------------
# score


@pytest.mark.parametrize("counts", [5, 50])
def test_unrelated_images_score_low(counts: float) -> None:
    rng = np.random.default_rng(5)
    for _ in range(4):
        a = rng.poisson(counts * sample_texture(SMALL, rng))
        b = rng.poisson(counts * sample_texture(SMALL, rng))
        res = register(a, b)
        assert 0.0 <= res.score < 0.2
        assert res.ncc < 0.5


def test_score_falls_with_dose_but_stays_high_for_a_match() -> None:
    rng = np.random.default_rng(6)
    big = sample_texture((SMALL[0] + 2 * MARGIN, SMALL[1] + 2 * MARGIN), rng)
    ref, mov = views(big, SMALL, 4.2, -7.9)
    scores = {c: register(rng.poisson(c * ref), rng.poisson(c * mov)).score for c in (2, 50)}
    clean = register(ref, mov)
    assert clean.score > 0.99 and clean.ncc > 0.99
    assert 0.5 < scores[2] < scores[50] <= clean.score <= 1.0


# ---------------------------------------------------------------------------------------------
# options


def test_mask_ignores_a_static_artefact() -> None:
    """A strong static pattern (same place in both frames, like a detector artefact) captures
    the correlation peak at zero shift; masking it out restores the content shift."""
    rng = np.random.default_rng(7)
    big = sample_texture((SMALL[0] + 2 * MARGIN, SMALL[1] + 2 * MARGIN), rng)
    rows, cols = 6.3, -8.6
    ref, mov = views(big, SMALL, rows, cols)
    artefact = np.zeros(SMALL)
    artefact[:, :250] = 10.0 * _blur(rng.standard_normal((SMALL[0], 250)), 1.5)
    ref, mov = ref + artefact, mov + artefact
    mask = np.zeros(SMALL)
    mask[:, 300:] = 1.0
    mask = np.clip(
        _blur(mask, 10.0), 0.0, None
    )  # soft edges: a hard mask edge biases towards zero shift
    masked = register(ref, mov, mask=mask)
    assert error_px(masked, cols, -rows) < 0.05
    unmasked = register(ref, mov)
    assert error_px(unmasked, cols, -rows) > 1.0


def test_no_window_for_periodic_content() -> None:
    rng = np.random.default_rng(8)
    big = sample_texture(SMALL, rng)
    rows, cols = -3.7, 11.2
    moved = sfft.irfft2(
        sfft.rfft2(big)
        * np.exp(
            -2j
            * np.pi
            * (sfft.fftfreq(SMALL[0])[:, None] * rows + sfft.rfftfreq(SMALL[1])[None, :] * cols)
        ),
        s=SMALL,
    )
    res = register(big, moved, window=False)
    assert error_px(res, cols, -rows) < 0.005


def test_no_bandpass_still_registers_clean_images() -> None:
    rng = np.random.default_rng(9)
    big = sample_texture((SMALL[0] + 2 * MARGIN, SMALL[1] + 2 * MARGIN), rng)
    ref, mov = views(big, SMALL, -12.25, 3.5)
    res = register(ref, mov, bandpass=None)
    assert error_px(res, 3.5, 12.25) < 0.02


# ---------------------------------------------------------------------------------------------
# errors


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(10)
    return rng.poisson(20 * sample_texture((128, 160), rng)).astype(np.float64)


def test_different_shapes(image: np.ndarray) -> None:
    with pytest.raises(RegistrationError, match="same shape"):
        register(image, image[:, :-1])


@pytest.mark.parametrize("ndim", [1, 3])
def test_not_2d(image: np.ndarray, ndim: int) -> None:
    bad = image[0] if ndim == 1 else image[None]
    with pytest.raises(RegistrationError, match="2-D"):
        register(bad, bad)


@pytest.mark.parametrize("value", [0.0, 7.5])
def test_constant_image(image: np.ndarray, value: float) -> None:
    with pytest.raises(RegistrationError, match="moving is constant"):
        register(image, np.full_like(image, value))
    with pytest.raises(RegistrationError, match="reference is constant"):
        register(np.full_like(image, value), image)


@pytest.mark.parametrize(("value", "word"), [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_non_finite_values(image: np.ndarray, value: float, word: str) -> None:
    bad = image.copy()
    bad[40, 50] = value
    with pytest.raises(RegistrationError, match=f"moving contains {word}"):
        register(image, bad)
    with pytest.raises(RegistrationError, match=f"reference contains {word}"):
        register(bad, image)


def test_all_nan(image: np.ndarray) -> None:
    with pytest.raises(RegistrationError, match="NaN"):
        register(image, np.full_like(image, np.nan))


def test_invalid_mask(image: np.ndarray) -> None:
    with pytest.raises(RegistrationError, match="mask shape"):
        register(image, image, mask=np.ones((3, 3)))
    with pytest.raises(RegistrationError, match="empty"):
        register(image, image, mask=np.zeros(image.shape))
    with pytest.raises(RegistrationError, match="non-negative"):
        register(image, image, mask=-np.ones(image.shape))


@pytest.mark.parametrize("bandpass", [(4.0, 2.0), (-1.0, 8.0), (1.0,)])
def test_invalid_bandpass(image: np.ndarray, bandpass: tuple) -> None:
    with pytest.raises(RegistrationError, match="bandpass"):
        register(image, image, bandpass=bandpass)
