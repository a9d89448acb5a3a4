"""Example objective plugin: rewards sharp structures in the STED image.

Registered as ``sharpness`` in ``stedloop.objectives``; enable it with
``[objectives] names = ["quality", "sharpness"]``.
"""

from stedloop.plugins.sharpness.objective import SharpnessObjective

__all__ = ["SharpnessObjective"]
