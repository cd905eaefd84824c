"""Backends for real microscopes (the simulator is :mod:`fibsem_ophyd.sim`).

``fibsem_ophyd.backends.openfibsem`` bridges any OpenFIBSEM ``FibsemMicroscope`` (ThermoFisher,
TESCAN, Odemis, their Demo); it imports ``fibsem`` (the ``openfibsem`` extra) only when used.
"""

__all__: list[str] = []
