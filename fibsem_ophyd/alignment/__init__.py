"""Image alignment: sub-pixel registration of two images (pure numpy/scipy)."""

from __future__ import annotations

from fibsem_ophyd.alignment.registration import Registration, RegistrationError, register

__all__ = ["Registration", "RegistrationError", "register"]
