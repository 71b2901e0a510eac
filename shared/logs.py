"""JSON logging: one object per line, whatever the input (json.dumps escapes every character)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

_ENCODER = json.JSONEncoder(default=str, ensure_ascii=True)  # built once: json.dumps with options builds one a call


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...fields}``; ``extra={"fields": {...}}`` adds fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(out)


def configure_logging(level: str = "INFO", *, stream: Any = None) -> None:
    """Route every logger to one JSON handler on stderr (or ``stream``)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Record attributes no line of ours shows, left uncomputed (the logging HOWTO's "Optimization"): the thread's
    # and the multiprocessing process's names.
    logging.logThreads = False
    logging.logMultiprocessing = False
    for noisy in ("urllib3", "kubernetes", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
