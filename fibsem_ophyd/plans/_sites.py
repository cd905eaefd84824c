"""Lamella sites from an overview: the first step of an unattended batch."""

from typing import Any

import bluesky.plan_stubs as bps
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from .. import validate
from ..alignment.sites import find_squares
from ._coincidence import find_coincidence
from ._common import check_md, count, flag, in_run, positive, run_md
from ._movement import safe_absolute_move, save_position, stable_move
from ._overview import acquire_overview, mosaic_pixel_to_stage

__all__ = ["select_sites"]


def select_sites(
    microscope: Readable,
    n_sites: int = 3,
    prefix: str = "site-",
    rows: int = 3,
    cols: int = 3,
    hfw: float = 150e-6,
    min_size: float = 40e-6,
    bare_fraction: float = 0.9,
    coincidence: bool = True,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[dict]:
    """Pick lamella sites on an SEM overview and save them as stage positions.

    1. :func:`acquire_overview` (``rows`` x ``cols`` tiles of ``hfw``) around the current view.
    2. :func:`fibsem_ophyd.alignment.sites.find_squares` finds the grid squares; the
       complete squares that are not bare film are ranked by how even their interior is
       (lowest grey-level spread first) and the first ``n_sites`` are taken.
    3. A run (``plan_name: "select_sites"``) records one "square" event per square: where
       it is, its grey level and spread, complete/bare, the site name it got (or "") and
       the stage position of its centre; so the choice can be replayed and questioned.
    4. For each site: move (safely) to the square's centre, bring the most distinct feature
       nearby to the coincidence point (:func:`find_coincidence`, its own run, ``site`` in
       its metadata; featureless ice gives nothing to match), move back to the square's
       centre in the sample plane (a stable move keeps coincidence up to the local relief)
       and save the position as ``prefix`` + number (``site-1``, ...). A metal particle or a
       cell chosen as the feature is thus not the lamella site.

    Parameters
    ----------
    microscope : Readable
        The microscope device (SEM orientation: the sample flat to the electron beam).
    n_sites : int
        How many sites at most (fewer if fewer squares qualify; none: no site is saved and
        the decision run says why, square by square).
    prefix : str
        Saved position names are ``prefix`` + 1, 2, ...
    rows, cols : int
        Overview tiles.
    hfw : float
        Field width of each tile, m.
    min_size : float
        Smaller dark regions are not squares, m.
    bare_fraction : float
        Squares darker than this fraction of the typical square are bare film.
    coincidence : bool
        Run :func:`find_coincidence` at each site before saving it.
    md : dict, optional
        Extra metadata for every run.

    Returns
    -------
    dict
        ``sites`` ({name: saved stage position}), ``overview`` and ``decisions`` (run uids).
    """
    n_sites = count("n_sites", n_sites)
    if not isinstance(prefix, str) or not prefix.strip():
        raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
    rule = "a fraction in (0, 1]"
    if not 0 < validate.real("bare_fraction", bare_fraction, rule=rule) <= 1:
        raise ValueError(f"bare_fraction must be {rule}, got {validate.show(bare_fraction)}")
    min_size = positive("min_size", min_size)
    coincidence = flag("coincidence", coincidence)
    base = check_md(md)
    overview = yield from acquire_overview(microscope, rows=rows, cols=cols, hfw=hfw, md=base)
    mapping = overview["mapping"]
    squares = find_squares(overview["mosaic"], float(mapping["pixel_size"]),
                           min_size=min_size, bare_fraction=bare_fraction)
    usable = sorted((s for s in squares if s.complete and not s.bare),
                    key=lambda s: s.roughness)
    chosen = {id(s): f"{prefix}{i + 1}" for i, s in enumerate(usable[:n_sites])}
    rec = microscope.recorders.square
    targets = {}

    def decisions():
        for s in squares:
            pos = mosaic_pixel_to_stage(mapping, s.col, s.row)
            name = chosen.get(id(s), "")
            if name:
                targets[name] = pos
            yield from bps.mv(rec.col, s.col, rec.row, s.row, rec.size, s.size,
                              rec.grey, s.grey, rec.roughness, s.roughness,
                              rec.whole, int(s.complete), rec.bare, int(s.bare),
                              rec.site, name, rec.stage_x, pos["x"], rec.stage_y, pos["y"],
                              rec.stage_z, pos["z"])
            yield from bps.trigger_and_read([rec], name="square")

    _md = run_md("select_sites", {"microscope": microscope, "n_sites": n_sites,
                                  "prefix": prefix, "rows": rows, "cols": cols, "hfw": hfw,
                                  "min_size": min_size, "bare_fraction": bare_fraction}, base,
                 detectors=[])
    _md.update(overview=overview["uid"], sites=list(chosen.values()))
    uid, _ = yield from in_run(decisions(), _md)
    saved = {}
    for name in sorted(targets, key=lambda n: int(n[len(prefix):])):
        yield from safe_absolute_move(microscope, targets[name])
        if coincidence:
            res = yield from find_coincidence(microscope, md={**base, "site": name})
            # coincidence was found on the most distinct feature nearby (featureless ice gives
            # no match); the site is the square's centre: go back there in the sample plane
            picked = [h for h in res["history"] if h["action"] == "centre_feature"]
            if picked:
                yield from stable_move(microscope, picked[0]["dx"], picked[0]["dy"], "electron")
        saved[name] = yield from save_position(microscope, name)
    return {"sites": saved, "overview": overview["uid"], "decisions": uid}
