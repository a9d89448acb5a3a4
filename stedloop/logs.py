"""structlog set-up: readable lines on a terminal, JSON lines to a file or a journal."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import structlog
from structlog.typing import FilteringBoundLogger, Processor

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    level: str = "info", json_file: Path | None = None, json_stderr: bool | None = None
) -> None:
    """Route structlog through stdlib logging: stderr (pretty or JSON) and an optional file.

    ``json_stderr`` defaults to JSON when stderr is not a terminal (a service's journal) or
    when ``$STEDLOOP_LOG_FORMAT=json``.
    """
    if json_stderr is None:
        fmt = os.environ.get("STEDLOOP_LOG_FORMAT", "")
        json_stderr = fmt == "json" or (fmt != "console" and not sys.stderr.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        cache_logger_on_first_use=False,
    )
    json_renderer = structlog.processors.JSONRenderer()
    console_renderer = structlog.dev.ConsoleRenderer(
        colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
    )

    def formatter(renderer: Processor) -> logging.Formatter:
        steps: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
        if renderer is json_renderer:
            # JSON has no renderer of its own for tracebacks: turn exc_info into text.
            steps.append(structlog.processors.format_exc_info)
        return structlog.stdlib.ProcessorFormatter(
            processors=[*steps, renderer],
            foreign_pre_chain=shared,
        )

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setFormatter(formatter(json_renderer if json_stderr else console_renderer))
    root.addHandler(stderr_handler)
    if json_file is not None:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(json_file, encoding="utf-8")
        file_handler.setFormatter(formatter(json_renderer))
        root.addHandler(file_handler)
    root.setLevel(_LEVELS[level])


def get_logger(name: str) -> FilteringBoundLogger:
    """The logger ``configure_logging`` set up (a level-filtering structlog logger)."""
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger
