"""The dock widgets: imaging, movement, milling, minimap, batch, supervision.

Each builds plan calls (:class:`~fibsem_ophyd.gui._driver.Call`) and hands them to the
viewer's driver, so the same widget works in-process and through the queue server.
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..milling import MillingStage, RectanglePattern, load_protocol
from ._driver import Call

__all__ = ["ImagingWidget", "MovementWidget", "MillingWidget", "MinimapWidget",
           "BatchWidget", "SupervisionWidget", "add_widgets", "RESOLUTIONS"]

#: the frame sizes offered (OpenFIBSEM's standard resolutions), [w, h] px
RESOLUTIONS = ([384, 256], [768, 512], [1536, 1024], [3072, 2048])

UM = 1e-6


def _spin(value: float, lo: float, hi: float, decimals: int = 2, suffix: str = "",
          step: float = 1.0) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setValue(value)
    if suffix:
        box.setSuffix(f" {suffix}")
    return box


def _button(text: str, slot) -> QPushButton:
    b = QPushButton(text)
    b.clicked.connect(slot)
    return b


class _Base(QWidget):
    def __init__(self, mv, parent=None):
        super().__init__(parent)
        self.mv = mv
        self.driver = mv.driver

    def submit(self, *calls: Call) -> bool:
        return self.driver.submit(list(calls))


class ImagingWidget(_Base):
    """Image settings of each beam and the acquire buttons (``acquire_image``)."""

    def __init__(self, mv, parent=None):
        super().__init__(mv, parent)
        from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton

        s = self.driver.image_settings("electron")
        res = [int(v) for v in s.get("resolution", RESOLUTIONS[2])]
        choices = [f"{w}x{h}" for w, h in RESOLUTIONS]
        if f"{res[0]}x{res[1]}" not in choices:
            choices.insert(0, f"{res[0]}x{res[1]}")
        self.hfw = FloatSpinBox(label="field width (um)", value=s.get("hfw", 150e-6) / UM,
                                min=1.0, max=2000.0, step=10.0)
        self.resolution = ComboBox(label="resolution", choices=choices,
                                   value=f"{res[0]}x{res[1]}")
        self.dwell = FloatSpinBox(label="dwell (us)", value=s.get("dwell_time", 1e-6) / UM,
                                  min=0.025, max=100.0, step=0.5)
        self.buttons = {}
        for name, dets in (("electron", ("sem",)), ("ion", ("fib",)),
                           ("both", ("sem", "fib"))):
            b = PushButton(text=f"Acquire {name}")
            b.changed.connect(lambda *_, d=dets: self.acquire(*d))
            self.buttons[name] = b
        self.form = Container(widgets=[self.hfw, self.resolution, self.dwell,
                                       *self.buttons.values()])
        lay = QVBoxLayout(self)
        lay.addWidget(self.form.native)
        lay.addStretch()

    def settings(self) -> dict:
        """The image settings in SI units (``acquire_image``'s keywords)."""
        w, h = (int(v) for v in self.resolution.value.split("x"))
        return {"hfw": float(self.hfw.value) * UM, "resolution": [w, h],
                "dwell_time": float(self.dwell.value) * UM}

    def acquire(self, *detectors: str) -> bool:
        settings = self.settings()
        return self.submit(*(Call("acquire_image", (d,), settings) for d in detectors))


class MovementWidget(_Base):
    """Stage position, saved positions (save / go to), flat to beam, milling angle."""

    def __init__(self, mv, parent=None):
        super().__init__(mv, parent)
        self.position = QLabel()
        self.positions = QListWidget()
        self.name = QLineEdit()
        self.name.setPlaceholderText("position name")
        self.angle = _spin(15.0, 0.0, 90.0, 1, "deg")
        self.after = QCheckBox("acquire both beams after a move")
        self.after.setChecked(mv.acquire_after_move)
        self.after.toggled.connect(lambda on: setattr(mv, "acquire_after_move", on))
        lay = QVBoxLayout(self)
        lay.addWidget(self.position)
        row = QHBoxLayout()
        row.addWidget(self.name)
        row.addWidget(_button("Save", self.save))
        lay.addLayout(row)
        lay.addWidget(self.positions)
        lay.addWidget(_button("Go to selected", self.go_to))
        row = QHBoxLayout()
        row.addWidget(_button("Flat to electron", lambda: self.flat("electron")))
        row.addWidget(_button("Flat to ion", lambda: self.flat("ion")))
        lay.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.angle)
        row.addWidget(_button("Move to milling angle", self.milling_angle))
        lay.addLayout(row)
        lay.addWidget(self.after)
        lay.addStretch()
        self.driver.finished.connect(lambda *_: self.refresh())
        self.driver.positions_changed.connect(lambda *_: self.refresh())
        self.refresh()

    def refresh(self) -> None:
        try:
            p = self.driver.stage_position()
        except Exception as exc:  # noqa: BLE001 -- shown, not fatal
            self.position.setText(f"stage position unavailable: {exc}")
        else:
            self.position.setText(
                f"x {p['x'] * 1e3:.4f} mm  y {p['y'] * 1e3:.4f} mm  z {p['z'] * 1e3:.4f} mm\n"
                f"r {p['r']:.1f} deg  t {p['t']:.1f} deg")
        try:
            names = sorted(self.driver.positions())
        except Exception:  # noqa: BLE001
            names = []
        current = {self.positions.item(i).text() for i in range(self.positions.count())}
        if current != set(names):
            self.positions.clear()
            self.positions.addItems(names)

    def save(self) -> bool:
        name = self.name.text().strip()
        if not name:
            self.mv.notify("give the position a name first")
            return False
        return self.submit(Call("save_position", ("microscope",), {"name": name}))

    def go_to(self) -> bool:
        item = self.positions.currentItem()
        if item is None:
            self.mv.notify("select a saved position first")
            return False
        return self.mv.move("go_to_position", name=item.text())

    def flat(self, beam: str) -> bool:
        return self.mv.move("move_flat_to_beam", beam=beam)

    def milling_angle(self) -> bool:
        return self.mv.move("move_to_milling_angle", milling_angle=float(self.angle.value()))


def default_stage() -> MillingStage:
    """A 10 x 5 x 1 um box at 2 nA in silicon: something to place before a protocol."""
    return MillingStage("box", RectanglePattern(width=10e-6, height=5e-6, depth=1e-6),
                        milling_current=2e-9, hfw=80e-6)


class MillingWidget(_Base):
    """Milling stages (a protocol's section, or a box), their time estimate, run, progress,
    pause and stop. The patterns are drawn over the ion view (layer "patterns")."""

    def __init__(self, mv, parent=None):
        super().__init__(mv, parent)
        self.model = mv.patterns
        self.protocol: dict[str, list[MillingStage]] = {}
        self.protocol_source = None
        self.section = QComboBox()
        self.section.currentTextChanged.connect(self._on_section)
        self.stages = QListWidget()
        self.stages.currentRowChanged.connect(self._on_select)
        self.estimate = QLabel()
        self.supervised = QCheckBox("supervised (pause before each stage)")
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        lay = QVBoxLayout(self)
        lay.addWidget(_button("Load protocol...", self.load_dialog))
        lay.addWidget(self.section)
        lay.addWidget(self.stages)
        lay.addWidget(self.estimate)
        lay.addWidget(self.supervised)
        row = QHBoxLayout()
        self.run_button = _button("Run milling", self.run)
        row.addWidget(self.run_button)
        #: pause: the RunEngine pauses, the milling holds at the end of its pass (beam
        #: blanked) until Resume (supervision tab); stop: the run is aborted, the milling ends
        #: at the end of its pass, what was milled stays, the ion beam goes back to its
        #: imaging current, blanked
        self.pause_button = _button("Pause", self.driver.pause)
        self.stop_button = _button("Stop", self.driver.abort)
        row.addWidget(self.pause_button)
        row.addWidget(self.stop_button)
        lay.addLayout(row)
        lay.addWidget(self.bar)
        lay.addStretch()
        self.model.changed.connect(self._refresh)
        self.driver.progress.connect(lambda f: self.bar.setValue(int(1000 * f)))
        if not self.model.stages:
            self.model.set_stages([default_stage()])
        self._refresh()

    def load(self, source) -> None:
        """Load a protocol (``protocol.yaml`` path or dict) and show its first section."""
        self.protocol = load_protocol(source)
        self.protocol_source = source
        self.section.blockSignals(True)
        self.section.clear()
        self.section.addItems(list(self.protocol))
        self.section.blockSignals(False)
        if self.protocol:
            self._on_section(next(iter(self.protocol)))

    def load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Milling protocol", "", "YAML (*.yaml *.yml)")
        if path:
            try:
                self.load(path)
            except ValueError as exc:
                self.mv.notify(str(exc))

    def _on_section(self, name: str) -> None:
        if name in self.protocol:
            self.model.selected = 0
            self.model.set_stages(self.protocol[name])

    def _on_select(self, row: int) -> None:
        if 0 <= row < len(self.model.stages) and row != self.model.selected:
            self.model.selected = row
            self.model.redraw()

    def _refresh(self) -> None:
        names = [s.name for s in self.model.stages]
        if [self.stages.item(i).text() for i in range(self.stages.count())] != names:
            self.stages.blockSignals(True)
            self.stages.clear()
            self.stages.addItems(names)
            self.stages.blockSignals(False)
        if self.model.stages:
            self.stages.setCurrentRow(self.model.selected)
        est = self.model.estimates()
        total = sum(e["total"] for e in est)
        beam = sum(e["milling"] for e in est)
        self.estimate.setText(f"estimated time: {beam:.0f} s of milling, {total:.0f} s with "
                              "current changes, alignment and images (dose-based)")

    def calls(self) -> list[Call]:
        stages = [s.to_dict() for s in self.model.stages if s.enabled]
        return [Call("mill_stages", ("microscope",),
                     {"stages": stages, "supervised": self.supervised.isChecked()})]

    def run(self) -> bool:
        if not self.model.stages:
            self.mv.notify("no milling stage: load a protocol first")
            return False
        self.bar.setValue(0)
        return self.submit(*self.calls())


class MinimapWidget(_Base):
    """Overview mosaic (``acquire_overview``), double-click on it to add a site, the sites
    list (saved with ``save_position`` at each site), ``select_sites``' choice shown.

    The sites are marked on the mosaic (Points layer "sites", in metres like the mosaic) at
    the mosaic pixel their stage position centres
    (:func:`~fibsem_ophyd.plans.stage_to_mosaic_pixel`). Through the queue server the mosaic
    and ``select_sites``' choice come from the stored runs (the driver's ``overview``
    signal), the newest as it lands."""

    LAYER = "overview"
    SITES_LAYER = "sites"

    def __init__(self, mv, parent=None):
        super().__init__(mv, parent)
        self.rows, self.cols = QSpinBox(), QSpinBox()
        for box in (self.rows, self.cols):
            box.setRange(1, 15)
            box.setValue(3)
        self.hfw = _spin(150.0, 10.0, 2000.0, 1, "um", 10.0)
        self.n_sites = QSpinBox()
        self.n_sites.setRange(1, 50)
        self.n_sites.setValue(3)
        self.sites = QListWidget()
        self.mapping: dict | None = None
        self.site_positions: dict[str, dict] = {}
        form = QFormLayout()
        form.addRow("rows", self.rows)
        form.addRow("columns", self.cols)
        form.addRow("tile field width", self.hfw)
        form.addRow("sites to select", self.n_sites)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(_button("Acquire overview", self.acquire))
        lay.addWidget(_button("Select sites automatically", self.select))
        lay.addWidget(QLabel("sites (double-click the overview to add one):"))
        lay.addWidget(self.sites)
        lay.addWidget(_button("Save sites as positions", self.save_sites))
        lay.addStretch()
        self.layer = None
        self.sites_layer = None
        mv.hover_layers.append(self.LAYER)  # the mosaic takes the focus under the mouse
        #: the ``acquire_overview`` run of the mosaic shown, when it was read back stored
        self.overview_uid: str | None = None
        self.driver.finished.connect(self._on_finished)
        self.driver.overview.connect(self.show_stored)

    def _args(self) -> dict:
        return {"rows": int(self.rows.value()), "cols": int(self.cols.value()),
                "hfw": float(self.hfw.value()) * UM}

    def acquire(self) -> bool:
        return self.submit(Call("acquire_overview", ("microscope",), self._args()))

    def select(self) -> bool:
        return self.submit(Call("select_sites", ("microscope",),
                                {"n_sites": int(self.n_sites.value()), **self._args()}))

    def _on_finished(self, plan: str, result, error) -> None:
        if error is not None or not isinstance(result, dict):
            return
        if plan == "acquire_overview" and "mosaic" in result:
            self.show_overview(result["mosaic"], result["mapping"])
        elif plan == "select_sites":
            for name, pos in result.get("sites", {}).items():
                self.add_site(name, pos)

    def show_overview(self, mosaic, mapping: dict) -> None:
        """Place the mosaic below the two views, in metres (pixel size of the mapping)."""
        mosaic = np.asarray(mosaic)
        self.mapping = dict(mapping)
        px = float(mapping["pixel_size"])
        e = self.mv.frames["electron"]
        h, w = mosaic.shape
        # below the electron view, its left edges aligned
        translate = (e.height / 2 + 0.05 * e.width, -e.width / 2)
        viewer = self.mv.viewer
        if self.LAYER in viewer.layers:
            layer = viewer.layers[self.LAYER]
            layer.data, layer.scale, layer.translate = mosaic, (px, px), translate
        else:
            active = viewer.layers.selection.active
            layer = viewer.add_image(mosaic, name=self.LAYER, colormap="gray",
                                     scale=(px, px), translate=translate, units=("m", "m"))
            layer.mouse_double_click_callbacks.append(self._on_double_click)
            # the views keep the focus (their clicks); the mosaic takes it under the mouse
            viewer.layers.selection.active = active
        self.layer = layer
        self._mark_sites()

    def show_stored(self, stored: dict) -> None:
        """Show an overview read back from the catalog
        (:func:`fibsem_ophyd.plans.stored_runs.overview_of`): its mosaic in metres and, for
        a ``select_sites`` run, the sites it chose (at their squares' centres)."""
        if stored.get("uid") != self.overview_uid:
            self.show_overview(stored["mosaic"], stored["mapping"])
            self.overview_uid = stored.get("uid")
        for name, site in stored.get("sites", {}).items():
            self.add_site(name, {ax: float(site[ax]) for ax in ("x", "y", "z", "r", "t")})

    def site_pixels(self) -> dict[str, tuple[float, float]]:
        """``{site: (col, row)}``: the mosaic pixel each site's stage position centres (none
        without a mosaic)."""
        from ..plans import stage_to_mosaic_pixel

        if self.mapping is None:
            return {}
        return {n: stage_to_mosaic_pixel(self.mapping, p) for n, p in self.site_positions.items()}

    def _mark_sites(self) -> None:
        """Mark the sites on the mosaic: the "sites" layer, placed like the mosaic layer."""
        if self.layer is None:
            return
        pixels = self.site_pixels()
        data = np.array([(r, c) for c, r in pixels.values()], float).reshape(-1, 2)
        names = np.array(list(pixels), dtype=object)  # strings, also when there is none
        px = float(self.mapping["pixel_size"]) if self.mapping else 1.0
        size = max(self.layer.data.shape[-2:]) / 40
        viewer = self.mv.viewer
        if self.sites_layer is None or self.SITES_LAYER not in viewer.layers:
            active = viewer.layers.selection.active
            self.sites_layer = viewer.add_points(
                data, name=self.SITES_LAYER, features={"name": names},
                feature_defaults={"name": ""}, size=size, face_color="transparent",
                border_color="yellow", border_width=0.2, symbol="disc",
                scale=(px, px), translate=tuple(self.layer.translate), units=("m", "m"),
                text={"string": "{name}", "color": "yellow", "size": 10,
                      "anchor": "upper_left"})
            viewer.layers.selection.active = active  # the markers take no clicks
        else:
            layer = self.sites_layer
            layer.scale, layer.translate = (px, px), tuple(self.layer.translate)
            layer.data = data
            layer.features = {"name": names}
            layer.size = size

    def _on_double_click(self, layer, event) -> None:
        if self.mapping is None:
            return
        from ..plans import mosaic_pixel_to_stage

        row, col = (float(v) for v in layer.world_to_data(event.position)[-2:])
        h, w = layer.data.shape[-2:]
        if not (-0.5 <= col < w - 0.5 and -0.5 <= row < h - 0.5):
            return
        pos = mosaic_pixel_to_stage(self.mapping, col, row)
        self.add_site(f"site-{len(self.site_positions) + 1}", pos)

    def add_site(self, name: str, position: dict) -> None:
        self.site_positions[name] = dict(position)
        self.sites.clear()
        self.sites.addItems([f"{n}: x {p['x'] * 1e6:.1f} um, y {p['y'] * 1e6:.1f} um"
                             for n, p in self.site_positions.items()])
        self._mark_sites()

    def save_sites(self) -> bool:
        calls = []
        for name, pos in self.site_positions.items():
            calls += [Call("safe_absolute_move", ("microscope",), {"position": pos}),
                      Call("save_position", ("microscope",), {"name": name})]
        if not calls:
            self.mv.notify("no site to save: double-click the overview to add one")
            return False
        return self.submit(*calls)


class BatchWidget(_Base):
    """The overnight batch (``mill_lamellae``): each lamella's sections done, skipped,
    measured thickness and the dose-based time to the end."""

    def __init__(self, mv, milling: MillingWidget, parent=None):
        super().__init__(mv, parent)
        self.milling = milling
        self.batch = QLineEdit("batch")
        self.sites = QListWidget()
        self.sites.setSelectionMode(QListWidget.SelectionMode.MultiSelection)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["lamella", "done", "skipped", "thickness (nm)",
                                              "time left (s)"])
        self.total = QLabel()
        lay = QVBoxLayout(self)
        form = QFormLayout()
        form.addRow("batch name", self.batch)
        lay.addLayout(form)
        lay.addWidget(QLabel("sites (saved positions):"))
        lay.addWidget(self.sites)
        row = QHBoxLayout()
        row.addWidget(_button("Run batch", self.run))
        row.addWidget(_button("Resume batch", lambda: self.run(resume=True)))
        row.addWidget(_button("Refresh", self.refresh))
        lay.addLayout(row)
        lay.addWidget(self.table)
        lay.addWidget(self.total)
        self.driver.finished.connect(lambda *_: self.refresh())
        self.driver.positions_changed.connect(lambda *_: self.refresh())
        self.refresh()

    def selected_sites(self) -> list[str]:
        return [i.text() for i in self.sites.selectedItems()]

    def run(self, resume: bool = False) -> bool:
        if not self.milling.protocol:
            self.mv.notify("load a milling protocol (milling widget) first")
            return False
        sites = self.selected_sites()
        if not sites:
            self.mv.notify("select the sites to mill")
            return False
        protocol = {"milling": {k: [s.to_dict() for s in v]
                                for k, v in self.milling.protocol.items()}}
        return self.submit(Call("mill_lamellae", ("microscope",),
                                {"sites": sites, "protocol": protocol,
                                 "batch": self.batch.text().strip() or "batch",
                                 "resume": resume}))

    def section_times(self) -> dict[str, float]:
        """Dose-based time (s, with overheads) of each protocol section at one site."""
        from ..milling import estimate_stage_time

        return {k: sum(estimate_stage_time(s)["total"] for s in v)
                for k, v in self.milling.protocol.items()}

    def refresh(self) -> None:
        try:
            names = sorted(self.driver.positions())
        except Exception:  # noqa: BLE001
            names = []
        chosen = set(self.selected_sites())
        if [self.sites.item(i).text() for i in range(self.sites.count())] != names:
            self.sites.clear()
            self.sites.addItems(names)
            for i in range(self.sites.count()):
                self.sites.item(i).setSelected(self.sites.item(i).text() in chosen)
        try:
            state = self.driver.batch_state(self.batch.text().strip() or "batch")
        except Exception:  # noqa: BLE001 -- no catalog reachable: show nothing
            state = {}
        times = self.section_times()
        sites = self.selected_sites() or sorted(state)
        self.table.setRowCount(len(sites))
        left_total = 0.0
        for r, site in enumerate(sites):
            st = state.get(site, {"done": [], "skipped": None, "thickness": None})
            left = 0.0 if st["skipped"] else sum(t for k, t in times.items()
                                                  if k not in st["done"])
            left_total += left
            thick = st["thickness"]
            cells = [site, ", ".join(st["done"]) or "-",
                     (f"{st['skipped']['section']}: {st['skipped']['reason']}"
                      if st["skipped"] else "-"),
                     "-" if thick is None or not math.isfinite(thick) else f"{thick * 1e9:.0f}",
                     f"{left:.0f}"]
            for c, text in enumerate(cells):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.total.setText(f"estimated time to the end: {left_total / 60:.1f} min")


class SupervisionWidget(_Base):
    """When a plan pauses for a person: what is asked, the correction made with the mouse,
    resume or abort.

    * A supervised milling: move the pattern (Shift + click or drag it in the ion view);
      Resume sends it as the milling device's pattern offset, which the plan applies and
      records with the stage.
    * A supervised detection (``detect(..., supervised=True)``, started here with "Detect
      and supervise" or by anyone on the same RunEngine / queue server): its keypoints are
      drawn over the frame they were found in (layer "keypoints"); drag a point to where the
      feature is; Resume enters each moved point as a correction
      (:func:`~fibsem_ophyd.plans.correct_keypoint`), which the plan stores."""

    #: tries (0.5 s apart) to read a paused detection the catalog does not show yet
    READ_TRIES = 10

    def __init__(self, mv, parent=None):
        super().__init__(mv, parent)
        self.model = mv.patterns
        self.keypoints = mv.keypoints
        self.asked = QLabel("nothing to supervise")
        self.asked.setWordWrap(True)
        self.offset = QLabel()
        self.resume_button = _button("Resume", self.resume)
        self.abort_button = _button("Abort", self.abort)
        self.detect_beam = QComboBox()
        self.detect_beam.addItems(["ion", "electron"])
        self.detect_features = QLineEdit("NeedleTip, LamellaCentre")
        self.detect_button = _button("Detect and supervise", self.detect)
        lay = QVBoxLayout(self)
        lay.addWidget(self.asked)
        lay.addWidget(self.offset)
        row = QHBoxLayout()
        row.addWidget(self.resume_button)
        row.addWidget(self.abort_button)
        lay.addLayout(row)
        form = QFormLayout()
        form.addRow("beam", self.detect_beam)
        form.addRow("features", self.detect_features)
        lay.addWidget(QLabel("keypoint detection (the shipped model):"))
        lay.addLayout(form)
        lay.addWidget(self.detect_button)
        lay.addStretch()
        self.driver.state.connect(self._on_state)
        self.model.changed.connect(self._show_offset)
        self.keypoints.changed.connect(self._show_offset)
        self._on_state(self.driver.current_state)

    def detect(self) -> bool:
        """Start a supervised detection of the listed features in the chosen beam."""
        names = [n.strip() for n in self.detect_features.text().split(",") if n.strip()]
        if not names:
            self.mv.notify("name the features to detect (e.g. NeedleTip, LamellaCentre)")
            return False
        det = "fib" if self.detect_beam.currentText() == "ion" else "sem"
        return self.submit(Call("detect", (det,), {"features": names, "supervised": True}))

    def _on_state(self, state: str) -> None:
        paused = state == "paused"
        self.resume_button.setEnabled(paused)
        self.abort_button.setEnabled(paused)
        self.detect_button.setEnabled(state == "idle")
        if not paused:
            if self.model.supervised is not None:
                self.model.end_supervision(keep=False)
            if self.keypoints.active:
                self.keypoints.end()
            self.asked.setText("nothing to supervise")
            self._show_offset()
            return
        if self._show_keypoints(self.READ_TRIES):
            return
        info = self.driver.checkpoint()
        stage = info.get("stage_name") or ""
        if info.get("milling_state") == "ready" and stage:
            self.asked.setText(
                f"{info.get('plan') or 'the plan'} waits before milling stage {stage!r}: "
                "check the ion image, move the pattern if needed (Shift + click or drag it "
                "in the ion view), then Resume, or Abort.")
            self.model.begin_supervision(stage)
        else:
            self.asked.setText(f"{info.get('plan') or 'the plan'} is paused: Resume or Abort.")
        self._show_offset()

    def _show_keypoints(self, tries: int) -> bool:
        """A paused supervised detection: its frame and keypoints shown; ``False`` if the
        paused plan is not one. A detection the catalog does not hold completely yet is
        read again (``tries`` times, 0.5 s apart)."""
        from ._driver import Frame

        if self.driver.current_state != "paused" or self.keypoints.active:
            return self.keypoints.active
        try:
            det = self.driver.paused_detection()
        except Exception as exc:  # noqa: BLE001 -- still being stored: try again shortly
            if tries > 1:
                QTimer.singleShot(500, lambda: self._show_keypoints(tries - 1))
            else:
                self.mv.notify(f"cannot read the paused detection: {exc}")
            return False
        if det is None:
            return False
        # the frame the keypoints were found in (a given frame is not the live one)
        self.mv.show_frame(Frame(det.beam, det.image, det.pixel_size))
        try:
            self.keypoints.begin(det, self.mv.frames[det.beam])
        except ValueError as exc:
            self.mv.notify(str(exc))
            return False
        self.asked.setText(
            f"detect waits for keypoint corrections in the {det.beam} view: drag a point to "
            "where its feature is, then Resume (the corrections are stored with the "
            "detection), or Abort.")
        self._show_offset()
        return True

    def _show_offset(self) -> None:
        if self.keypoints.active:
            self.offset.setText(self.keypoints.describe())
            return
        x, y = self.model.offset
        self.offset.setText(f"pattern correction: ({x * 1e6:.2f}, {y * 1e6:.2f}) um"
                            if self.model.supervised else "")

    def resume(self) -> None:
        if self.keypoints.active:
            try:
                self.driver.correct_keypoints(self.keypoints.corrections())
            except (ValueError, RuntimeError) as exc:
                self.mv.notify(str(exc))
                return
            self.keypoints.end()
        if self.model.supervised is not None:
            x, y = self.model.offset
            try:
                self.driver.set_pattern_offset(x, y)
            except ValueError as exc:
                self.mv.notify(str(exc))
                return
            self.model.end_supervision(keep=True)
        self.driver.resume()

    def abort(self) -> None:
        self.keypoints.end()
        self.model.end_supervision(keep=False)
        self.driver.abort()


def add_widgets(mv, dock: bool = True) -> dict[str, QWidget]:
    """Create the widgets as tabs of one panel (``mv.widgets_panel``) and, with ``dock``,
    dock it on the right of ``mv.viewer``'s window (the napari plugin docks it itself)."""
    from qtpy.QtWidgets import QTabWidget

    imaging = ImagingWidget(mv)
    movement = MovementWidget(mv)
    milling = MillingWidget(mv)
    widgets = {"imaging": imaging, "movement": movement, "milling": milling,
               "minimap": MinimapWidget(mv), "batch": BatchWidget(mv, milling),
               "supervision": SupervisionWidget(mv)}
    panel = QTabWidget()
    for name, w in widgets.items():
        panel.addTab(w, name.capitalize())
    mv.widgets_panel = panel
    # a plan pausing for a person brings the supervision tab forward
    mv.driver.state.connect(
        lambda state: panel.setCurrentWidget(widgets["supervision"]) if state == "paused"
        else None)
    if dock:
        mv.viewer.window.add_dock_widget(panel, name="Microscope", area="right")
    timer = QTimer(panel)
    timer.timeout.connect(movement.refresh)
    timer.start(1000)
    return widgets
