"""Live feedback: BestEffortCallback (tables; plots only with a display), progress bars."""

import bluesky.plan_stubs as bps  # noqa: F401
import bluesky.plans as bp  # noqa: F401
import bluesky.preprocessors as bpp  # noqa: F401
from bluesky.callbacks.best_effort import BestEffortCallback

bec = BestEffortCallback()
if not HAS_DISPLAY:  # noqa: F821  (00-base.py)
    bec.disable_plots()
if RE_WORKER:  # noqa: F821
    # The worker's console output is streamed to clients: keep the tables, no baseline.
    bec.disable_baseline()
RE.subscribe(bec)  # noqa: F821  (10-session.py)

pbar_manager = None
if HAS_TERMINAL:  # noqa: F821
    from bluesky.utils import ProgressBarManager

    pbar_manager = ProgressBarManager()
    RE.waiting_hook = pbar_manager  # noqa: F821

if IN_IPYTHON:  # noqa: F821
    from bluesky.magics import BlueskyMagics
    from IPython import get_ipython

    get_ipython().register_magics(BlueskyMagics)
