"""The simulator backend (entry point ``simulator`` in ``stedloop.drivers``)."""

from stedloop.drivers.simulator.driver import SimulatorDriver, SimulatorOptions
from stedloop.drivers.simulator.structures import STRUCTURES

__all__ = ["STRUCTURES", "SimulatorDriver", "SimulatorOptions"]
