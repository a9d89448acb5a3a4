"""Optimisation sessions: the loop, its control, and the regions it images."""

from stedloop.session.control import SessionControl
from stedloop.session.runner import Session, SessionSummary, interrupted_sessions

__all__ = ["Session", "SessionControl", "SessionSummary", "interrupted_sessions"]
