"""Milling patterns in the viewer: stages drawn as shapes (metres) over the ion view,
edited by drag / resize or moved with Shift (+ Ctrl) + click; a supervised offset."""

from __future__ import annotations

import dataclasses

import numpy as np
from qtpy.QtCore import QObject, Signal

from ..milling import MillingStage, make_pattern
from ._frames import ImageFrame

__all__ = ["PatternModel", "moved", "resized", "centre_of"]

LAYER = "patterns"


def centre_of(stage: MillingStage) -> tuple[float, float]:
    """Pattern centre (m, image frame)."""
    return float(stage.pattern.centre_x), float(stage.pattern.centre_y)


def moved(stage: MillingStage, dx: float, dy: float) -> MillingStage:
    """The stage with its pattern moved by (dx, dy) m (validated as any pattern)."""
    p = stage.pattern.to_dict()
    p["centre_x"] = float(p["centre_x"]) + dx
    p["centre_y"] = float(p["centre_y"]) + dy
    return dataclasses.replace(stage, pattern=make_pattern(p))


def resized(stage: MillingStage, fx: float, fy: float) -> MillingStage:
    """The stage with its pattern's ``width`` x ``height`` scaled by (fx, fy), where the
    pattern has both (others keep their size)."""
    p = stage.pattern.to_dict()
    if "width" not in p or "height" not in p:
        return stage
    p["width"] = float(p["width"]) * fx
    p["height"] = float(p["height"]) * fy
    return dataclasses.replace(stage, pattern=make_pattern(p))


def _bbox(ring: np.ndarray) -> tuple[float, float, float, float]:
    return float(ring[:, 0].min()), float(ring[:, 1].min()), float(ring[:, 0].max()), \
        float(ring[:, 1].max())


class PatternModel(QObject):
    """The milling stages being edited and their shapes layer.

    ``stages`` are :class:`~fibsem_ophyd.milling.MillingStage` in the ion image frame (m,
    +y up); ``selected`` the index Shift + click moves; ``offset`` (m) the supervised shift
    of the stage a paused plan is about to mill (drawn, not written into the stage).

    Signals: ``changed()`` after any edit.
    """

    changed = Signal()

    def __init__(self, viewer, frame: ImageFrame, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.frame = frame
        self.stages: list[MillingStage] = []
        self.selected = 0
        self.supervised: str | None = None  # the stage name a paused plan waits on
        self.offset = (0.0, 0.0)
        self._owners: list[int] = []
        self._rings: list[np.ndarray] = []
        self._redrawing = False
        self.layer = viewer.add_shapes(
            name=LAYER, edge_color="yellow", face_color=[1, 1, 0, 0.15],
            edge_width=self._edge_width(), units=("m", "m"))
        self.layer.events.data.connect(self._on_layer_data)

    # -- the model ----------------------------------------------------------------------------
    def set_stages(self, stages: list[MillingStage]) -> None:
        self.stages = list(stages)
        self.selected = min(self.selected, max(len(self.stages) - 1, 0))
        self.redraw()

    def set_frame(self, frame: ImageFrame) -> None:
        if frame != self.frame:
            self.frame = frame
            self.redraw()

    def _drawn_offset(self, i: int) -> tuple[float, float]:
        if self.supervised is not None and self.stages[i].name == self.supervised:
            return self.offset
        return (0.0, 0.0)

    def move_selected_to(self, x: float, y: float) -> tuple[float, float]:
        """Shift + click: the selected pattern's centre to (x, y) m. Returns the move (m)."""
        if not self.stages:
            raise ValueError("no milling pattern to move: load a protocol or add a stage")
        i = self.selected
        ox, oy = self._drawn_offset(i)
        cx, cy = centre_of(self.stages[i])
        return self._move([i], x - (cx + ox), y - (cy + oy))

    def move_all_to(self, x: float, y: float) -> tuple[float, float]:
        """Ctrl + Shift + click: every pattern moves by what brings the selected one to
        (x, y) m (they keep their relative places). Returns the move (m)."""
        if not self.stages:
            raise ValueError("no milling pattern to move: load a protocol or add a stage")
        ox, oy = self._drawn_offset(self.selected)
        cx, cy = centre_of(self.stages[self.selected])
        return self._move(list(range(len(self.stages))), x - (cx + ox), y - (cy + oy))

    def _move(self, indices: list[int], dx: float, dy: float) -> tuple[float, float]:
        if self.supervised is not None:
            # a paused supervised milling: the correction is an offset the plan applies and
            # records, not a change of the stage it is milling
            names = {self.stages[i].name for i in indices}
            if self.supervised in names:
                self.set_offset(self.offset[0] + dx, self.offset[1] + dy)
                return dx, dy
        new = list(self.stages)
        for i in indices:
            new[i] = moved(new[i], dx, dy)  # raises before anything changes on a bad value
        self.stages = new
        self.redraw()
        return dx, dy

    def set_offset(self, x: float, y: float, limit: float | None = None) -> None:
        if limit is not None and (abs(x) > limit or abs(y) > limit):
            raise ValueError(f"pattern offset ({x * 1e6:.2f}, {y * 1e6:.2f}) um is beyond "
                             f"the milling device's limit +-{limit * 1e6:.1f} um")
        self.offset = (float(x), float(y))
        self.redraw()

    def begin_supervision(self, stage_name: str) -> None:
        self.supervised = stage_name
        self.offset = (0.0, 0.0)
        for i, st in enumerate(self.stages):
            if st.name == stage_name:
                self.selected = i
        self.redraw()

    def end_supervision(self, keep: bool) -> None:
        """``keep``: the plan milled the stage at the offset: the drawn stage moves there."""
        if self.supervised is not None and keep and any(self.offset):
            self.stages = [moved(s, *self.offset) if s.name == self.supervised else s
                           for s in self.stages]
        self.supervised = None
        self.offset = (0.0, 0.0)
        self.redraw()

    def estimates(self, imaging_current: float | None = None) -> list[dict]:
        """Dose-based time of each stage (s): ``{"milling", "overhead", "total"}``."""
        from ..milling import estimate_stage_time

        return [estimate_stage_time(s, imaging_current) for s in self.stages]

    # -- the layer ----------------------------------------------------------------------------
    def _edge_width(self) -> float:
        # shapes are in world metres: a line a little under 1 % of the field wide
        return self.frame.width / 150

    def redraw(self) -> None:
        rings, owners = [], []
        for i, st in enumerate(self.stages):
            if not st.enabled:
                continue
            ox, oy = self._drawn_offset(i)
            for ring in st.pattern.outline():
                rings.append(np.asarray(ring, float) + [ox, oy])
                owners.append(i)
        self._redrawing = True
        try:
            self.layer.data = []
            if rings:
                self.layer.add_polygons([self.frame.polygon_to_world(r) for r in rings],
                                        edge_width=self._edge_width())
                colours = np.array([[0, 1, 1, 1] if o == self.selected else [1, 1, 0, 1]
                                    for o in owners])
                self.layer.edge_color = colours
        finally:
            self._redrawing = False
        self._rings, self._owners = rings, owners
        self.changed.emit()

    def _on_layer_data(self, event) -> None:
        if self._redrawing:
            return
        action = str(getattr(event, "action", ""))
        if action.endswith("changing") or action.endswith("adding") \
                or action.endswith("removing"):
            return
        if not action.endswith("changed"):
            self.redraw()  # shapes added or removed by hand: the stages stay what they are
            return
        indices = list(getattr(event, "data_indices", ()) or range(len(self._owners)))
        new = list(self.stages)
        try:
            done = set()
            for k in indices:
                if k < 0 or k >= len(self._owners) or k >= len(self.layer.data):
                    continue
                i = self._owners[k]
                if i in done:
                    continue
                old = _bbox(self._rings[k])
                now = _bbox(self.frame.world_to_polygon(self.layer.data[k]))
                fx = (now[2] - now[0]) / max(old[2] - old[0], 1e-12)
                fy = (now[3] - now[1]) / max(old[3] - old[1], 1e-12)
                dx = (now[0] + now[2] - old[0] - old[2]) / 2
                dy = (now[1] + now[3] - old[1] - old[3]) / 2
                if self.supervised is not None and new[i].name == self.supervised:
                    # a paused supervised milling: dragging sets the offset it will apply
                    self.offset = (self.offset[0] + dx, self.offset[1] + dy)
                    done.add(i)
                    continue
                if abs(fx - 1) > 1e-3 or abs(fy - 1) > 1e-3:
                    new[i] = resized(new[i], fx, fy)  # about the pattern's centre
                new[i] = moved(new[i], dx, dy)
                self.selected = i
                done.add(i)
        except ValueError:
            self.redraw()  # an edit the pattern refuses (e.g. zero size): draw it back
            return
        self.stages = new
        self.redraw()
