"""``python -m stedloop.worker``: the driver worker process (started by the daemon)."""

from stedloop.worker.process import main

if __name__ == "__main__":
    raise SystemExit(main())
