"""Registration speed and accuracy: ``fibsem_ophyd.alignment.register`` vs an OpenFIBSEM baseline.

Both methods register the same 1536x1024 image pairs: two views of a periodic, band-limited,
sample-like texture, the moving view shifted by a known sub-pixel amount (uniform in +-30 px) in
Fourier space, then Poisson noise at 5 and 50 mean counts/px. Error = Euclidean distance in px
between the measured and the true shift. Times are wall-clock per call with warm caches,
interleaved (ours, theirs) so that the load of the machine affects both alike.

The baseline re-implements OpenFIBSEM's ``shift_from_crosscorrelation`` as used by its alignment
(``fibsem/alignment``, ``/work/shared/reference/physics.md`` section 8): z-score both images,
multiply both full ``fft2`` spectra by a radial ring mask (``hp <= r <= lp`` frequency px,
``lp=50``, ``hp=4``) smoothed by a Gaussian of ``sigma=5`` px and normalise their energies,
``xcorr = fftshift(real(ifft2(F1 conj(F2))))``, integer ``argmax``, no sub-pixel refinement. Its
band-pass mask is rebuilt on every call, as in OpenFIBSEM; "theirs (cached mask)" times the same
method with the mask built once.

    python benchmarks/bench_registration.py [N_PER_DOSE]
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi

from fibsem_ophyd.alignment import register, synthetic
from fibsem_ophyd.alignment.synthetic import sample_texture

SHAPE = (1024, 1536)  # rows, cols
MARGIN = synthetic.MARGIN  # texture px around each view (> largest shift)
MAX_SHIFT = 30.0
DOSES = (5, 50)  # mean counts/px
TARGET_MS = 60.0
TARGET_ERROR = {5: 0.2, 50: 0.05}


def noisy_pair(
    big: np.ndarray, rng: np.random.Generator, counts: float
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """uint16 Poisson views of ``big`` and the true (dx, dy) in px, +x right, +y up."""
    ref, mov, dx, dy = synthetic.noisy_pair(rng, SHAPE, counts, big=big, max_shift=MAX_SHIFT,
                                            margin=MARGIN)
    return ref.astype(np.uint16), mov.astype(np.uint16), dx, dy


# ---------------------------------------------------------------------------------------------
# OpenFIBSEM-style baseline


def _circ_mask(shape: tuple[int, int], radius: float) -> np.ndarray:
    """Filled disc of ``radius`` frequency px about the fftshifted centre (PIL ellipse)."""
    y = np.arange(shape[0])[:, None] - shape[0] / 2
    x = np.arange(shape[1])[None, :] - shape[1] / 2
    return (x * x + y * y <= radius * radius).astype(float)


def openfibsem_bandpass(shape: tuple[int, int], lp=50, hp=4, sigma=5) -> np.ndarray:
    ring = _circ_mask(shape, lp) * (1.0 - _circ_mask(shape, hp))
    return ndi.gaussian_filter(ring, sigma=sigma)


def openfibsem_shift(ref, new, bandpass: np.ndarray | None = None) -> tuple[float, float]:
    """(dx, dy) in px of ``new`` relative to ``ref``, +x right, +y up (converted from +y down)."""
    if bandpass is None:  # OpenFIBSEM rebuilds it on every call
        bandpass = openfibsem_bandpass(ref.shape)
    a = (ref - ref.mean()) / ref.std()
    b = (new - new.mean()) / new.std()
    n = a.size
    fa = sfft.ifftshift(bandpass * sfft.fftshift(sfft.fft2(a)))
    fa = n * fa / np.sqrt(np.sum(fa * np.conj(fa)))
    fb = sfft.ifftshift(bandpass * sfft.fftshift(sfft.fft2(b)))
    fb[0, 0] = 0
    fb = n * fb / np.sqrt(np.sum(fb * np.conj(fb)))
    xcorr = np.real(sfft.fftshift(sfft.ifft2(fa * np.conj(fb))))
    iy, ix = np.unravel_index(np.argmax(xcorr), xcorr.shape)
    cen = np.asarray(xcorr.shape) / 2
    err = np.array(cen - [iy, ix], int)  # (rows down, cols right)
    return float(err[1]), float(-err[0])


# ---------------------------------------------------------------------------------------------


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main(n: int = 10) -> dict:
    rng = np.random.default_rng(0)
    big_shape = (SHAPE[0] + 2 * MARGIN, SHAPE[1] + 2 * MARGIN)
    textures = [sample_texture(big_shape, rng) for _ in range(2)]
    cached_mask = openfibsem_bandpass(SHAPE)

    # warm caches (window, filters, FFT plans) for both methods
    ref, mov, _, _ = noisy_pair(textures[0], rng, 50)
    for _ in range(3):
        register(ref, mov)
        openfibsem_shift(ref, mov, cached_mask)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"registration benchmark: {SHAPE[1]}x{SHAPE[0]} px, {n} shifts in +-{MAX_SHIFT:g} px "
        f"per dose, {os.cpu_count()} CPUs, load average {load:.2f}"
    )
    header = (
        f"{'counts/px':>9} {'method':<24} {'median ms':>9} {'min ms':>7} {'median err px':>13} "
    )
    print(header + f"{'max err px':>10} {'min score':>9}")
    results: dict = {}
    all_times: list[float] = []  # ours, both doses
    for counts in DOSES:
        rows: dict[str, dict[str, list[float]]] = {
            k: {"t": [], "e": [], "s": []} for k in ("ours", "theirs", "theirs_cached")
        }
        for i in range(n):
            ref, mov, dx, dy = noisy_pair(textures[i % 2], rng, counts)
            res, t = _timed(register, ref, mov)
            rows["ours"]["t"].append(t)
            rows["ours"]["e"].append(np.hypot(res.dx - dx, res.dy - dy))
            rows["ours"]["s"].append(res.score)
            (bx, by), t = _timed(openfibsem_shift, ref, mov)
            rows["theirs"]["t"].append(t)
            rows["theirs"]["e"].append(np.hypot(bx - dx, by - dy))
            (bx, by), t = _timed(openfibsem_shift, ref, mov, cached_mask)
            rows["theirs_cached"]["t"].append(t)
            rows["theirs_cached"]["e"].append(np.hypot(bx - dx, by - dy))
        summary = {
            k: {
                "median_ms": 1e3 * float(np.median(v["t"])),
                "min_ms": 1e3 * float(np.min(v["t"])),
                "median_err": float(np.median(v["e"])),
                "max_err": float(np.max(v["e"])),
                "min_score": float(np.min(v["s"])) if v["s"] else float("nan"),
            }
            for k, v in rows.items()
        }
        results[counts] = summary
        all_times += rows["ours"]["t"]
        names = {
            "ours": "ours (register)",
            "theirs": "OpenFIBSEM-style",
            "theirs_cached": "OpenFIBSEM (cached mask)",
        }
        for k, s in summary.items():
            score = f"{s['min_score']:.2f}" if k == "ours" else "-"  # baseline: not computed
            print(
                f"{counts:>9} {names[k]:<24} {s['median_ms']:>9.1f} {s['min_ms']:>7.1f} "
                f"{s['median_err']:>13.3f} {s['max_err']:>10.3f} {score:>9}"
            )
        ours, theirs, cached = summary["ours"], summary["theirs"], summary["theirs_cached"]
        print(
            f"{'':>9} ratio ours/theirs: time {ours['median_ms'] / theirs['median_ms']:.2f} "
            f"(vs cached mask {ours['median_ms'] / cached['median_ms']:.2f}), "
            f"error {ours['median_err'] / theirs['median_err']:.3f}"
        )

    print("targets:")
    for counts in DOSES:
        s = results[counts]["ours"]
        good = s["median_err"] <= TARGET_ERROR[counts]
        print(
            f"  median error at {counts} counts/px <= {TARGET_ERROR[counts]} px: "
            f"{s['median_err']:.3f} {'OK' if good else 'NOT MET'}"
        )
    median_ms = 1e3 * float(np.median(all_times))
    good = median_ms <= TARGET_MS
    print(
        f"  median time per call <= {TARGET_MS:g} ms: {median_ms:.1f} ms "
        f"{'OK' if good else 'NOT MET'}"
        f" (load average {load:.2f} on {os.cpu_count()} CPUs)"
    )
    return results


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
