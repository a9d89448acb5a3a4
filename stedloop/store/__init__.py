"""Session storage: the append-only ledger and the session folders."""

from stedloop.store.ledger import Event, Ledger
from stedloop.store.session_store import SessionInfo, SessionNotFound, SessionRecord, SessionStore

__all__ = ["Event", "Ledger", "SessionInfo", "SessionNotFound", "SessionRecord", "SessionStore"]
