"""Random lift-out scenes for training and scoring feature detection.

:func:`liftout_scene` builds, from one seed, a simulated microscope looking at a lift-out
situation: a lamella between its trenches (or a volume block, or a row of landing posts), the
manipulator needle near it (sometimes with a copper adaptor and a lifted volume block), with a
random beam, field width, stage position, dwell time and detector setting. The same seed gives
the same scene; :data:`HELD_OUT_SEEDS` are never used for training.
"""

from __future__ import annotations

import numpy as np

from ..backend import BackendError
from .microscope import SimulatedMicroscope

__all__ = ["liftout_scene", "TRAIN_SEEDS", "HELD_OUT_SEEDS", "HFW_RANGE"]

#: seeds of the shipped model's training frames and of its held-out scores
TRAIN_SEEDS = range(0, 10_000)
HELD_OUT_SEEDS = range(100_000, 100_200)
#: field widths (m) of the scenes
HFW_RANGE = (80e-6, 180e-6)


def liftout_scene(seed: int, resolution=(1536, 1024), kind: str | None = None,
                  beam: str | None = None) -> tuple[SimulatedMicroscope, str]:
    """A simulated microscope set up on a random lift-out scene, and the beam to image with.

    Parameters
    ----------
    seed : int
        Seeds the scene, the choices below and the image noise.
    resolution : (int, int)
        (width, height) px of the frames.
    kind : {"lamella", "block", "landing"}, optional
        What is on the sample: a lamella between trenches (default 65 %), a volume block in
        its trench (15 %) or a row of landing posts (20 %). The needle is inserted in 80 % of
        scenes with its tip over a random point of the central part of the frame; with a
        "block" or "landing" scene it carries a copper adaptor (and with "landing" a lifted
        volume block) in half of them.
    beam : {"electron", "ion"}, optional
        Default: either, evenly.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x11F7]))
    if kind is None:
        kind = str(rng.choice(["lamella", "block", "landing"], p=[0.65, 0.15, 0.2]))
    if kind not in ("lamella", "block", "landing"):
        raise ValueError(f"kind must be 'lamella', 'block' or 'landing', got {kind!r}")
    beam = beam or str(rng.choice(["electron", "ion"]))
    sim = SimulatedMicroscope(seed=int(seed))
    hfw = float(rng.uniform(*HFW_RANGE))
    pos = sim.get_stage_position()
    pos["x"] += float(rng.uniform(-300e-6, 300e-6))
    pos["y"] += float(rng.uniform(-300e-6, 300e-6))
    sim.move_stage_absolute(pos)
    w, h = int(resolution[0]), int(resolution[1])
    for b in ("electron", "ion"):
        sim.set("hfw", hfw, b)
        sim.set("resolution", [w, h], b)
        sim.set("dwell_time", float(rng.uniform(0.3e-6, 3e-6)), b)
    centre = sim.truth.surface_point(beam)
    if centre is None:
        centre = np.zeros(3)
    cx, cy = float(centre[0]), float(centre[1])
    obj = (cx + float(rng.uniform(-0.25, 0.25)) * hfw,
           cy + float(rng.uniform(-0.18, 0.18)) * hfw)
    if kind == "lamella":
        sim.liftout.add_lamella(obj, width=float(rng.uniform(0.08, 0.2)) * hfw,
                                depth=float(rng.uniform(4e-6, 8e-6)),
                                thickness=float(rng.uniform(1.5e-6, 4e-6)),
                                trench=float(rng.uniform(6e-6, 12e-6)),
                                angle=float(rng.uniform(-5.0, 5.0)))
    elif kind == "block":
        sim.liftout.add_volume_block(obj, size=(float(rng.uniform(0.08, 0.2)) * hfw,
                                                float(rng.uniform(6e-6, 15e-6)),
                                                float(rng.uniform(5e-6, 10e-6))))
    else:
        sim.liftout.add_landing_grid((obj[0], obj[1] - float(rng.uniform(0.1, 0.3)) * hfw),
                                     posts=3, pitch=float(rng.uniform(0.35, 0.6)) * hfw,
                                     post_width=float(rng.uniform(0.08, 0.18)) * hfw,
                                     post_height=float(rng.uniform(20e-6, 50e-6)))
    if rng.uniform() < 0.8:
        sim.insert_manipulator("PARK")
        # the tip over a random pixel of the central part of the frame, some way up the
        # beam from the surface seen there (so it shows in the image)
        col = float(rng.uniform(0.2, 0.75)) * w
        row = float(rng.uniform(0.15, 0.85)) * h
        view = sim.truth.view(beam)
        s = sim.truth.surface_point(beam, col, row)
        base = view.sample_to_chamber(s) if s is not None else np.zeros(3)
        lift = float(rng.uniform(5e-6, 40e-6))
        for _ in range(20):
            q = base + lift * np.asarray(view.source)
            try:
                sim.move_manipulator_absolute({"x": float(q[0]), "y": float(q[1]),
                                               "z": float(q[2])})
                break
            except BackendError:
                lift += 10e-6
        if kind != "lamella" and rng.uniform() < 0.5:
            size = (float(rng.uniform(0.05, 0.12)) * hfw, 6e-6, float(rng.uniform(4e-6, 8e-6)))
            sim.liftout.attach_adaptor(size=size)
            if kind == "landing":
                blk = (float(rng.uniform(0.04, 0.1)) * hfw, 8e-6, float(rng.uniform(4e-6, 8e-6)))
                below = (-0.5 * blk[0] - 0.5e-6, -0.5 * size[2] - 0.5 * blk[2])
                sim.liftout.add_volume_block(below, size=blk, attached=True)
    sim.set("brightness", float(rng.uniform(0.4, 0.6)), beam)
    sim.set("contrast", float(rng.uniform(0.35, 0.65)), beam)
    return sim, beam
