"""Logging set-up: readable text or one JSON object per line, never a secret.

Callback URLs carry a token in their path; the access log's copy of the path
is redacted before any handler sees it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_CALLBACK_PATH = re.compile(r"(/callbacks/[^/\s?]+/)[^/\s?\"]+")


def redact(text: str) -> str:
    """Replace the token of every callback path in ``text``."""
    if "/callbacks/" not in text:  # every log record passes here; skip the regex cheaply
        return text
    return _CALLBACK_PATH.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """Redacts callback tokens from a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(log_format: str = "text", level: int = logging.INFO) -> None:
    """Route taskhook's and uvicorn's loggers through one redacting handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactTokens())
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("taskhook", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(level)
