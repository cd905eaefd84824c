"""Image alignment: sub-pixel registration of two images (pure numpy/scipy, no I/O)."""

from __future__ import annotations

from fibsem_ophyd.alignment.registration import (
    DEFAULT_BANDPASS,
    Registration,
    RegistrationError,
    register,
)

__all__ = ["DEFAULT_BANDPASS", "Registration", "RegistrationError", "register"]
