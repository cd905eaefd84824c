"""Keypoint supervision in the viewer: the keypoints a paused supervised detection found,
drawn as a napari Points layer over the frame they were found in (metres, placed like the
image layers), dragged by the person; each moved point is a correction (pixels) the driver
enters before the plan resumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qtpy.QtCore import QObject, Signal

from ._frames import ImageFrame

__all__ = ["PausedDetection", "KeypointModel", "paused_detection", "LAYER"]

LAYER = "keypoints"

#: a point moved by less than this (px) is the model's guess kept
MOVED = 1e-6


@dataclass(frozen=True)
class PausedDetection:
    """A supervised detection waiting for corrections.

    ``features``: the features asked for, in order, each the model's guess (x right, y down,
    px) or ``None`` when not found; ``image`` the frame they were found in, ``pixel_size`` m.
    """

    uid: str
    beam: str
    features: dict
    pixel_size: float
    image: np.ndarray


def paused_detection(run) -> PausedDetection | None:
    """The detection of ``run`` if it is a supervised one still waiting for its corrections
    (detected, no correction stored, not closed); else ``None``."""
    from ..storage import read_detection

    start = run.metadata.get("start") or {}
    info = start.get("detection") or {}
    if not info.get("supervised") or run.metadata.get("stop") or "correction" in set(run):
        return None
    item = read_detection(run)
    if item is None:
        return None
    names = list(info.get("features") or [])
    return PausedDetection(uid=item.uid, beam=item.beam,
                           features={n: item.keypoints.get(n) for n in names},
                           pixel_size=float(item.pixelsize), image=np.asarray(item.image))


class KeypointModel(QObject):
    """The keypoints being corrected and their Points layer ("keypoints").

    ``begin`` draws a paused detection's keypoints over its beam's view (``frame``: where
    that view sits), each labelled with its feature; the person drags them (the layer is
    made active, in select mode); ``corrections()`` gives the moved ones in pixels;
    ``end`` removes the layer.

    Signals: ``changed()`` after a point moved.
    """

    changed = Signal()

    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.detection: PausedDetection | None = None
        self.frame: ImageFrame | None = None
        self.layer = None

    @property
    def active(self) -> bool:
        return self.detection is not None

    def begin(self, detection: PausedDetection, frame: ImageFrame) -> None:
        """Draw ``detection``'s found keypoints on ``frame`` (the view of its beam)."""
        self.end()
        h, w = detection.image.shape[:2]
        if tuple(frame.shape) != (h, w):
            raise ValueError(f"the {detection.beam} view shows a {frame.shape[1]}x"
                             f"{frame.shape[0]} frame; the detection's frame is {w}x{h}")
        self.detection, self.frame = detection, frame
        found = [(n, xy) for n, xy in detection.features.items() if xy is not None]
        world = np.array([frame.image_to_world(*frame.pixel_to_image(*xy)) for _, xy in found],
                         float).reshape(-1, 2)
        from ..detection import get_feature

        colours = [get_feature(n).color for n, _ in found]
        self.layer = self.viewer.add_points(
            world, name=LAYER, features={"name": [n for n, _ in found]},
            feature_defaults={"name": ""}, size=frame.width / 40, face_color="transparent",
            border_color=colours or "white", border_width=0.2, symbol="disc",
            text={"string": "{name}", "color": "yellow", "size": 10, "anchor": "upper_left"},
            units=("m", "m"))
        self.layer.events.data.connect(self._on_data)
        self.viewer.layers.selection.active = self.layer
        self.layer.mode = "select"

    def _on_data(self, event) -> None:
        if str(getattr(event, "action", "")).endswith("changed"):
            self.changed.emit()

    def positions(self) -> dict[str, tuple[float, float]]:
        """Where the points are now, ``{feature: (x, y) px}`` (added points are ignored)."""
        if self.layer is None or self.frame is None:
            return {}
        names = list(self.layer.features["name"]) if len(self.layer.data) else []
        out = {}
        for name, world in zip(names, np.asarray(self.layer.data, float), strict=True):
            if name in (self.detection.features if self.detection else {}):
                x, y = self.frame.world_to_image(world)
                out[str(name)] = self.frame.image_to_pixel(x, y)
        return out

    def corrections(self) -> dict[str, tuple[float, float]]:
        """The points the person moved: ``{feature: (x, y) px}`` where they are now."""
        if self.detection is None:
            return {}
        out = {}
        for name, (x, y) in self.positions().items():
            gx, gy = self.detection.features[name]
            if abs(x - gx) > MOVED or abs(y - gy) > MOVED:
                out[name] = (x, y)
        return out

    def describe(self) -> str:
        """One line per feature: where it is, moved by how much, or not found."""
        if self.detection is None:
            return ""
        now = self.positions()
        lines = []
        for name, guess in self.detection.features.items():
            if guess is None:
                lines.append(f"{name}: not found")
            elif name not in now:
                lines.append(f"{name}: ({guess[0]:.1f}, {guess[1]:.1f}) px, point removed "
                             "(the guess is kept)")
            else:
                x, y = now[name]
                dx, dy = x - guess[0], y - guess[1]
                moved = f", moved ({dx:+.1f}, {dy:+.1f}) px" if abs(dx) > MOVED or \
                    abs(dy) > MOVED else ""
                lines.append(f"{name}: ({x:.1f}, {y:.1f}) px{moved}")
        return "\n".join(lines)

    def end(self) -> None:
        """Remove the points (the supervision is over)."""
        layer, self.layer = self.layer, None
        beam = self.detection.beam if self.detection is not None else None
        self.detection = self.frame = None
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)
            if beam in self.viewer.layers:
                # the beam's view takes the mouse again (its click callbacks)
                self.viewer.layers.selection.active = self.viewer.layers[beam]
        self.changed.emit()
