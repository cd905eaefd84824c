"""Imaging plans: one image, a series of images, reference images with both beams."""

from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from .. import validate
from ._common import check_settings, count, microscope_of, read_limits, run_md

__all__ = ["acquire_image", "acquire_series", "take_reference_images",
           "apply_image_settings", "check_image_settings", "write_image_settings"]

_SETTINGS = ("resolution", "dwell_time", "hfw", "reduced_area", "line_integration",
             "frame_integration", "autocontrast")


def _settings_dict(**kwargs) -> dict:
    return {k: v for k, v in kwargs.items() if k in _SETTINGS and v is not None}


def apply_image_settings(detector: Readable, settings: dict) -> MsgGenerator[None]:
    """Validate every image setting first (nothing is written if one is bad), then set them.

    Parameters
    ----------
    detector : Readable
        ``microscope.sem`` or ``microscope.fib``.
    settings : dict
        Image settings (resolution, dwell_time, hfw, reduced_area, line_integration,
        frame_integration, autocontrast); ``reduced_area=[0, 0, 1, 1]`` is the full frame.
    """
    checked = yield from check_image_settings(detector, settings)
    yield from write_image_settings(detector, checked)


def check_image_settings(detector: Readable, settings: dict) -> MsgGenerator[dict]:
    """``settings`` validated against the detector's limits (read with ``bps.rd``), writing
    nothing: a plan calls this before it stages a detector or opens a run."""
    validate.known_keys("the image settings", validate.mapping("settings", settings),
                        _SETTINGS, what="image setting")
    if not settings:  # nothing to write (a chamber camera has no image settings)
        return {}
    checked = check_settings((yield from read_limits(detector)), settings)
    if checked.get("reduced_area") == [0.0, 0.0, 1.0, 1.0]:
        checked["reduced_area"] = None
    return checked


def write_image_settings(detector: Readable, checked: dict) -> MsgGenerator[None]:
    """Write settings :func:`check_image_settings` returned."""
    for key, value in checked.items():
        yield from bps.abs_set(getattr(detector, key), value, wait=True)


def _image_md(plan_name: str, detectors, plan_args: dict, md: dict | None,
              **kwargs) -> dict:
    return run_md(plan_name, plan_args, md, detectors=detectors,
                  beams=[d.beam for d in detectors], **kwargs)


def acquire_image(
    detector: Readable,
    resolution: list[int] | None = None,
    dwell_time: float | None = None,
    hfw: float | None = None,
    reduced_area: list[float] | None = None,
    line_integration: int | None = None,
    frame_integration: int | None = None,
    autocontrast: bool | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Acquire one image with ``detector`` (``microscope.sem`` or ``microscope.fib``).

    Parameters
    ----------
    detector : Readable
        The imaging detector.
    resolution : list[int], optional
        [width, height] in pixels.
    dwell_time : float, optional
        Per-pixel dwell, seconds.
    hfw : float, optional
        Horizontal field width, metres.
    reduced_area : list[float], optional
        [left, top, width, height] as fractions of the frame.
    line_integration, frame_integration : int, optional
        Number of integrated lines / frames.
    autocontrast : bool, optional
        Run the microscope's auto contrast/brightness before the frame.
    md : dict, optional
        Extra run metadata (e.g. ``sample``, ``lamella``).

    Returns
    -------
    str
        The run uid. The event (stream "primary") holds the image (external TIFF) and the
        stage position.
    """
    settings = _settings_dict(resolution=resolution, dwell_time=dwell_time, hfw=hfw,
                              reduced_area=reduced_area, line_integration=line_integration,
                              frame_integration=frame_integration, autocontrast=autocontrast)
    microscope = microscope_of(detector)
    _md = _image_md("acquire_image", [detector], {"detector": detector, **settings}, md,
                    hints={"dimensions": [(["time"], "primary")]})
    # every setting checked before the detector is staged and the run opened
    checked = yield from check_image_settings(detector, settings)

    @bpp.stage_decorator([detector])
    @bpp.run_decorator(md=_md)
    def inner():
        yield from write_image_settings(detector, checked)
        yield from bps.trigger_and_read([detector, microscope.stage])

    return (yield from inner())


def acquire_series(
    detector: Readable,
    num: int = 10,
    delay: float = 0.0,
    resolution: list[int] | None = None,
    dwell_time: float | None = None,
    hfw: float | None = None,
    reduced_area: list[float] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """``num`` images with ``detector`` in one run, e.g. to follow drift or charging.

    Each frame is one event of stream "primary" (image and stage position), preceded by a
    checkpoint, so the series can be paused and resumed between frames.

    Parameters
    ----------
    detector : Readable
        The imaging detector (``microscope.sem`` or ``microscope.fib``).
    num : int
        Number of frames (>= 1).
    delay : float
        Seconds to wait between frames.
    resolution : list[int], optional
        [width, height] in pixels.
    dwell_time : float, optional
        Per-pixel dwell, seconds.
    hfw : float, optional
        Horizontal field width, metres.
    reduced_area : list[float], optional
        [left, top, width, height] as fractions of the frame.
    md : dict, optional
        Extra run metadata (e.g. ``sample``).

    Returns
    -------
    str
        The run uid.
    """
    num = count("num", num)
    delay = validate.non_negative("delay", delay, units="s")
    settings = _settings_dict(resolution=resolution, dwell_time=dwell_time, hfw=hfw,
                              reduced_area=reduced_area)
    microscope = microscope_of(detector)
    _md = _image_md("acquire_series", [detector],
                    {"detector": detector, "num": num, "delay": delay, **settings}, md,
                    hints={"dimensions": [(["time"], "primary")]}, num_points=num)
    checked = yield from check_image_settings(detector, settings)

    @bpp.stage_decorator([detector])
    @bpp.run_decorator(md=_md)
    def inner():
        yield from write_image_settings(detector, checked)
        for i in range(num):
            # one frame between checkpoints, and nothing after it: a suspension takes again
            # the frame in progress only, never one already saved
            yield from bps.checkpoint()
            if i and delay:
                yield from bps.sleep(delay)
            yield from bps.trigger_and_read([detector, microscope.stage])
        yield from bps.checkpoint()

    return (yield from inner())


def take_reference_images(
    microscope: Readable,
    hfw: float | None = None,
    resolution: list[int] | None = None,
    dwell_time: float | None = None,
    autocontrast: bool | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """One image with each beam at the same settings: streams "electron" and "ion".

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    hfw : float, optional
        Horizontal field width for both beams, metres.
    resolution : list[int], optional
        [width, height] in pixels.
    dwell_time : float, optional
        Per-pixel dwell, seconds.
    autocontrast : bool, optional
        Run auto contrast/brightness before each frame.
    md : dict, optional
        Extra run metadata.

    Returns
    -------
    str
        The run uid.
    """
    settings = _settings_dict(hfw=hfw, resolution=resolution, dwell_time=dwell_time,
                              autocontrast=autocontrast)
    dets = [microscope.sem, microscope.fib]
    _md = _image_md("take_reference_images", dets, {"microscope": microscope, **settings}, md)
    # validated for both detectors before either is staged or the run opens
    checked = []
    for det in dets:
        checked.append((yield from check_image_settings(det, settings)))

    @bpp.stage_decorator(dets)
    @bpp.run_decorator(md=_md)
    def inner():
        for det, values in zip(dets, checked, strict=True):
            yield from write_image_settings(det, values)
            yield from bps.trigger_and_read([det, microscope.stage], name=det.beam)

    return (yield from inner())

