"""What the daemon and its session engine say to each other (both sides import this).

One connection (``multiprocessing.connection``: authenticated, one pickled message at a time)
between the daemon and the engine process it started. Each message is ``(kind, body)``, body a
dict. Session events travel as ``SessionEvent.to_data()`` and come back with
``events.from_data``; the configuration as the ``LoadedConfig`` itself.

Daemon -> engine:
    ``init``     {loaded, lock_fd}: the site configuration and the claim's descriptor (or None)
    ``open``     {request_id, loaded, resume, force, name}: start or resume a session
    ``control``  {command: stop | pause | resume, abort}: for the running session
    ``shutdown`` {grace_s}: stop the session (the frame in flight gets ``grace_s``, then is
                 aborted), make the lasers safe, close the driver, exit

Engine -> daemon:
    ``ready``    {driver, scorer}: the driver is connected and safe (both as in ``status``)
    ``failed``   {error, message, user_error}: the driver could not be opened; the engine exits
    ``opened``   {request_id, session_id, folder, budget_frames, objectives, progress, warnings}
    ``refused``  {request_id, code, message}: the open failed (a protocol error code)
    ``event``    {session_id, event}: one session event, after the ledger recorded it
    ``ended``    {session_id, summary, error}: the run is over and cleaned up (driver safe)
    ``scorer``   {snapshot}: the quality model's state changed
    ``fault``    {fault, info}: a driver-worker fault (the engine paused the session itself)
    ``closed``   {}: the driver is safe and closed; the engine exits next
"""

from __future__ import annotations

from typing import Any

Message = tuple[str, dict[str, Any]]

#: Exit codes of the engine process.
EXIT_OK = 0
EXIT_PARENT_LOST = 4
EXIT_BAD_START = 5
