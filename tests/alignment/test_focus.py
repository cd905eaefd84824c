"""Sharpness metrics and the sweep peak fit on synthetic blurred, shot-noise textures."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from fibsem_ophyd.alignment.focus import (
    METRICS,
    PeakFit,
    fit_peak,
    laplacian,
    sharpness,
    tenengrad,
    variance,
)


def _texture(rng, shape=(256, 384)) -> np.ndarray:
    """Positive sample-like texture: fine + coarse grain, bright particles (relative yield)."""
    fine = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
    coarse = ndimage.gaussian_filter(rng.standard_normal(shape), 6.0)
    img = 1.0 + 2.0 * fine / fine.std() * 0.2 + coarse / coarse.std() * 0.2
    spots = np.zeros(shape)
    n = shape[0] * shape[1] // 2000
    spots[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = 1.0
    img += 40 * ndimage.gaussian_filter(spots, 2.0)
    return np.clip(img, 0.05, None)


def _frame(clean, blur, rng, dose=50.0):
    """uint8 frame of ``clean`` blurred by ``blur`` px, Poisson noise at ``dose`` counts/px."""
    img = ndimage.gaussian_filter(clean, blur) if blur > 0 else clean
    counts = rng.poisson(img * dose) / dose
    return np.clip(128 + 60 * (counts - 1.0), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clean():
    return _texture(np.random.default_rng(3))


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_metrics_drop_monotonically_with_blur(clean, metric):
    rng = np.random.default_rng(4)
    blurs = [0.0, 1.0, 2.0, 4.0, 8.0]
    scores = [sharpness(_frame(clean, b, rng), metric, smooth=1.0) for b in blurs]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), scores


@pytest.mark.parametrize("func", [variance, tenengrad, laplacian])
def test_metrics_without_noise_or_smoothing(clean, func):
    scores = [func(ndimage.gaussian_filter(clean, b)) for b in (0.5, 1.5, 3.0, 6.0)]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), scores


def test_tenengrad_ignores_flat_regions():
    img = np.zeros((64, 64))
    img[:, 32:] = 100.0
    full = tenengrad(img)
    wide = np.zeros((64, 256))
    wide[:, 32:] = 100.0  # same single edge, four times the flat area
    assert full > 0
    # thresholding keeps only the edge pixels: the score is a mean over all pixels, so it
    # scales with the edge fraction, not with noise-free flat area content
    assert tenengrad(wide) == pytest.approx(full * 64 / 256, rel=0.05)


def test_constant_image_scores_zero():
    flat = np.full((32, 32), 7, np.uint8)
    for name in METRICS:
        assert sharpness(flat, name) == pytest.approx(0.0)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown sharpness metric"):
        sharpness(np.ones((8, 8)), "brenner")
    with pytest.raises(ValueError, match="2-D"):
        variance(np.ones(8))
    with pytest.raises(ValueError, match="NaN"):
        laplacian(np.full((8, 8), np.nan))
    with pytest.raises(ValueError, match="smooth"):
        sharpness(np.ones((8, 8)), smooth=-1)


@pytest.mark.parametrize("method", ["gaussian", "parabola"])
def test_fit_peak_of_a_gaussian_curve(method):
    x = np.linspace(-40e-6, 40e-6, 9)
    true = 3.3e-6
    y = 5.0 * np.exp(-0.5 * ((x - true) / 15e-6) ** 2) + (0.0 if method == "gaussian" else 0)
    fit = fit_peak(x, y, method)
    assert isinstance(fit, PeakFit) and not fit.at_edge
    tol = 1e-12 if method == "gaussian" else 2e-6
    assert fit.x == pytest.approx(true, abs=tol)
    assert fit.method == method


def test_fit_peak_on_decreasing_x_and_edges():
    x = np.array([3.0, 2.0, 1.0, 0.0])
    fit = fit_peak(x, [1.0, 2.0, 3.0, 2.0], "parabola")
    assert fit.x == pytest.approx(1.0) and fit.index == 2
    edge = fit_peak([0.0, 1.0, 2.0], [3.0, 2.0, 1.0])
    assert edge.at_edge and edge.x == 0.0 and edge.method == "sample"
    # non-positive scores fall back to the parabola
    assert fit_peak([0.0, 1.0, 2.0], [-1.0, 0.0, -1.0]).method == "parabola"


def test_fit_peak_sweep_of_blurred_frames(clean):
    """Blur ~ |defocus|: the fitted sweep peak lands within a step fraction of focus."""
    rng = np.random.default_rng(5)
    wd = np.linspace(-20.0, 20.0, 9)  # um; focus at +2.2 um, blur 0.25 px per um
    scores = [sharpness(_frame(clean, np.hypot(0.5, 0.25 * (w - 2.2)), rng), "tenengrad",
                        smooth=1.0) for w in wd]
    fit = fit_peak(wd, scores)
    assert abs(fit.x - 2.2) < 2.5  # half a step (5 um)


def test_fit_peak_bad_input():
    with pytest.raises(ValueError, match="length >= 3"):
        fit_peak([0, 1], [1, 2])
    with pytest.raises(ValueError, match="monotonic"):
        fit_peak([0, 1, 1], [1, 2, 1])
    with pytest.raises(ValueError, match="finite"):
        fit_peak([0, 1, 2], [1, np.nan, 1])
    with pytest.raises(ValueError, match="method"):
        fit_peak([0, 1, 2], [1, 2, 1], "cubic")


def test_fit_peak_level_centres_a_flat_top():
    x = np.linspace(-20.0, 20.0, 9)
    # flat top from -6 to +10 (centre +2), linear flanks, noise at the top
    y = np.clip(30 - 3 * np.abs(x - 2.0), None, 6.0) + np.array([0, 0, 0, 0.3, 0, 0, -0.2, 0, 0])
    y = np.clip(y, 0.5, None)
    assert abs(fit_peak(x, y, "parabola", level=0.3).x - 2.0) < abs(fit_peak(x, y, "parabola").x
                                                                    - 2.0) + 1e-9
    assert abs(fit_peak(x, y, "parabola", level=0.3).x - 2.0) < 1.5
    with pytest.raises(ValueError, match="level"):
        fit_peak(x, y, level=1.0)
