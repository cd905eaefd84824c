"""Imaging: a frame from the state (clean-image cache, exposure, noise) and its cost in time.

The noise-free image of a pose is cached, so a repeated frame costs a normal draw and a few
array passes. Ion frames sputter the field they scanned (:mod:`~fibsem_ophyd.sim.erosion`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from ..backend import STAGE_AXES, BackendError
from ..geometry import ION
from .clock import SimClock
from .detector import (
    ELEMENTARY_CHARGE,
    NoiseSource,
    autocontrast_settings,
    draw_frame,
    expose,
)
from .optics import Optics, beam_optics
from .render import RenderStats, render_clean
from .shading import Shading
from .state import SimState
from .view import BeamView

__all__ = ["ImagingModel", "crop", "ACB_TIME"]

#: a vendor auto contrast/brightness runs a few small probe frames, s
ACB_TIME = 1.5


def crop(img: np.ndarray, ra) -> np.ndarray:
    """The ``reduced_area`` (left, top, width, height fractions) of ``img``; all if ``None``."""
    if ra is None:
        return img
    h, w = img.shape
    c0 = min(int(round(ra[0] * w)), w - 1)
    r0 = min(int(round(ra[1] * h)), h - 1)
    c1 = min(w, c0 + max(1, int(round(ra[2] * w))))
    r1 = min(h, r0 + max(1, int(round(ra[3] * h))))
    return img[r0:r1, c0:c1]


class ImagingModel:
    """Frames of both beams from a :class:`~fibsem_ophyd.sim.state.SimState`, with the GIS
    needle and manipulator drawn over them and ion-imaging erosion recorded.

    ``frame`` arguments are validated per-frame settings (``resolution``, ``dwell_time``,
    ``hfw``, ``reduced_area``, ``line_integration``, ``frame_integration``, ``autocontrast``).
    """

    def __init__(self, state: SimState, gis, needle, erosion, liftout=None):
        self.state = state
        self.liftout = liftout
        self.gis = gis
        self.needle = needle
        self.erosion = erosion
        seed = state.seed & 0xFFFFFFFF
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1A6E]))
        self._noise = NoiseSource(np.random.SeedSequence([seed, 0x4E01]))
        self._clean_cache: OrderedDict = OrderedDict()
        self._exposure_cache: OrderedDict = OrderedDict()
        #: diagnostics of the last render (raster size, parallax, blur)
        self.last_render = RenderStats()

    def optics(self, beam: str, view: BeamView) -> Optics:
        """Blur of ``beam``'s frame of ``view`` with its current settings."""
        return beam_optics(self.state.beams[beam], view, self.state.focus_working_distance(view))

    def clean(self, beam: str, frame: Mapping, t: float) -> tuple[np.ndarray, Shading]:
        """Noise-free full-frame yield image of ``beam`` at clock time ``t`` (s), and its
        shading; cached on everything it depends on."""
        state = self.state
        st = state.beams[beam]
        view = state.view(beam, frame, t)
        key = (
            beam, tuple(state.stage[a] for a in STAGE_AXES), tuple(np.round(view.translation, 15)),
            view.width, view.height, view.pixel, st["scan_rotation"], tuple(st["shift"]),
            st["working_distance"], tuple(st["stigmation"]), st["voltage"], st["current"],
            st["detector_type"], st["detector_mode"], state.scene.version, state.offset,
            self.needle.key(), self.gis.state["gis_position"],
            self.liftout.key() if self.liftout is not None else None,
        )
        hit = self._clean_cache.get(key)
        if hit is not None:
            self._clean_cache.move_to_end(key)
            return hit
        shading = Shading.build(beam, st["detector_type"], st["detector_mode"], st["voltage"])
        optics = self.optics(beam, view)
        stats = RenderStats()
        img = render_clean(state.scene, view, shading, optics, stats)
        img = self.gis.composite(img, view, shading, optics)
        if self.liftout is not None:     # lift-out objects under and on the needle
            img = self.liftout.composite(img, view, shading, optics, attached=False)
        img = self.needle.composite(img, view, shading, optics)
        if self.liftout is not None:
            img = self.liftout.composite(img, view, shading, optics, attached=True)
        self.last_render = stats
        self._clean_cache[key] = (img, shading)
        while len(self._clean_cache) > 4:
            self._clean_cache.popitem(last=False)
        return img, shading

    def close(self) -> None:
        """End the noise thread (the next frame starts it again)."""
        self._noise.close()

    def render_clean(self, beam: str, frame: Mapping) -> np.ndarray:
        """Noise-free yield image now, cropped to the frame's reduced area."""
        img, _ = self.clean(beam, frame, self.state.clock.now())
        return crop(img, frame["reduced_area"])

    def acquire(self, beam: str, frame: Mapping) -> np.ndarray:
        """One uint8 frame (or its reduced-area crop); advances the clock by the frame time.

        Raises
        ------
        BackendError
            Chamber vented, beam off (or tripped), or an injected detector failure.
        """
        state = self.state
        st = state.beams[beam]
        if state.vacuum != "pumped":
            raise BackendError(f"cannot image with the {beam} beam: the chamber is {state.vacuum}")
        if not st["on"]:
            why = " (beam trip)" if beam in state.tripped else ""
            raise BackendError(f"cannot image: the {beam} beam is off{why}")
        if "detector_failure" in state.pending:
            state.pending.discard("detector_failure")
            raise BackendError(f"{beam} detector failed to return a frame")
        integrations = frame["line_integration"] * frame["frame_integration"]
        tau = frame["dwell_time"] * integrations
        primaries = st["current"] * tau / ELEMENTARY_CHARGE
        if frame["autocontrast"]:
            img, shading = self.clean(beam, frame, state.clock.now())
            b, c = autocontrast_settings(crop(img, frame["reduced_area"]), primaries,
                                         state.collection, shading.reference, state.excess_noise)
            st["brightness"], st["contrast"] = b, c
            state.clock.advance(ACB_TIME)
        w, h = frame["resolution"]
        n_pix = w * h
        if frame["reduced_area"] is not None:
            ra = frame["reduced_area"]
            n_pix = max(1, round(ra[2] * w)) * max(1, round(ra[3] * h))
        duration = SimClock.frame_time(frame["dwell_time"], n_pix, integrations)
        t_mid = state.clock.now() + 0.5 * duration
        img, shading = self.clean(beam, frame, t_mid)
        ekey = (id(img), frame["reduced_area"], primaries, st["brightness"], st["contrast"],
                st["blanked"])
        exp = self._exposure_cache.get(ekey)
        if exp is None or exp[0] is not img:
            clean = crop(img, frame["reduced_area"])
            if st["blanked"]:
                clean = np.zeros_like(clean)
            exp = (img, expose(clean, primaries, state.collection, st["brightness"],
                               st["contrast"], shading.reference, state.excess_noise))
            self._exposure_cache[ekey] = exp
            while len(self._exposure_cache) > 4:
                self._exposure_cache.popitem(last=False)
        else:
            self._exposure_cache.move_to_end(ekey)
        out = draw_frame(exp[1], self._rng, self._noise.take(exp[1].offset.shape))
        if beam == ION and not st["blanked"]:
            # the frame's ions sputter the field it scanned (see sim.erosion)
            view = state.view(beam, frame, t_mid)
            fw, fh = frame["resolution"]
            area = view.pixel * fw * view.pixel * fh
            if frame["reduced_area"] is not None:
                area *= frame["reduced_area"][2] * frame["reduced_area"][3]
            beam_time = frame["dwell_time"] * n_pix * integrations  # beam on the sample
            self.erosion.add_frame(state, view, st["current"], beam_time, area,
                                   frame["reduced_area"])
        state.clock.advance(duration)
        return out
