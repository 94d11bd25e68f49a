"""Logging set-up: readable text or one JSON object per line, never a secret.

Every record names an ``event`` and, where there is one, the ``provider`` and
``task_id``. Code that logs with ``event(logger, "name", provider=..., ...)``
passes them as structured fields; older ``"what key=value ..."`` messages have
their ``key=value`` pairs lifted into fields, so both shapes come out the same
in JSON. uvicorn's access lines become ``event: http_request`` with method,
path and status.

Callback URLs carry a token in their path. Secrets are redacted
(``server.observe.redaction``) when a record is created, so every handler,
pytest's caplog included, sees the redacted text, and once more on each
formatted line (tracebacks, exception messages). An access line's path is
redacted whole: every token-shaped segment of any path, and its query string.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

from server.observe.redaction import hide, redact, redact_path

__all__ = ["configure", "event", "hide", "redact", "redact_path"]

_KEY_VALUE = re.compile(r"(?<![\w.])([a-z_][a-z0-9_]*)=(\S+)")
_CALLBACK_PROVIDER = re.compile(r"^/callbacks/([^/?]+)/")
_TASK_PATH = re.compile(r"^/(?:dashboard/)?tasks/([^/?]+)")

#: Attributes every LogRecord has; anything else on a record came in as ``extra``
#: (except uvicorn's ``color_message``, an ANSI-coloured copy of the message).
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName", "color_message"}

#: What the text format never adds to a line: the standard attributes, the event's name
#: (the message starts with it) and the factory's mark.
_NOT_SHOWN = _STANDARD | {"event", "_redacted"}

#: Chatty libraries whose INFO lines would only repeat what taskhook logs itself.
_QUIET = ("httpx", "httpcore", "aiosqlite", "asyncio")


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactTokens(logging.Filter):
    """Redacts callback tokens from a record's message and arguments.

    A record our factory made was redacted when it was created and is passed
    as it is; any other record (``makeLogRecord``, another factory) is
    redacted here.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "_redacted", False):
            redact_record(record)
        return True


def redact_record(record: logging.LogRecord) -> None:
    """Redact a record in place.

    An access line keeps its five arguments (the JSON format lifts them into
    fields), its path redacted whole. Any other record with arguments is
    formatted once and the message redacted once: one pass over the text
    rather than one per argument, and a secret split across two arguments is
    caught too. Should formatting fail, each argument is redacted on its own
    and the handler reports the bad call as logging always does.
    """
    if isinstance(record.msg, str):
        if record.args and not _is_access(record):
            try:
                message = record.getMessage()
            except Exception:  # a bad call: left for the handler to report
                pass
            else:
                record.msg, record.args = redact(message), ()
                return
        record.msg = redact(record.msg)
    if _is_access(record):
        assert isinstance(record.args, tuple)
        client, method, path, http_version, status = record.args
        path = redact_path(path) if isinstance(path, str) else path
        record.args = (client, method, path, http_version, status)
    elif isinstance(record.args, tuple):
        record.args = tuple(_redact_value(a) for a in record.args)
    elif isinstance(record.args, dict):
        record.args = {k: _redact_value(v) for k, v in record.args.items()}


def _is_access(record: logging.LogRecord) -> bool:
    """uvicorn's access line: ``client - "METHOD path HTTP/x" status`` with those five args."""
    return (
        record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5
    )


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event: ``name key=value ...`` as text, the same as JSON keys."""
    if not logger.isEnabledFor(level):
        return
    text = " ".join([name, *(f"{k}={v}" for k, v in fields.items())])
    logger.log(level, "%s", text, extra={"event": name, **fields}, stacklevel=2)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: ``event`` first, then provider, task_id, ..."""
    message = record.getMessage()
    found: dict[str, Any] = {
        k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")
    }
    if _is_access(record):
        assert isinstance(record.args, tuple)
        client, method, path, http_version, status = record.args
        found.setdefault("event", "http_request")
        found.update(client=client, method=method, path=path, status=status)
        found["http_version"] = http_version
        if isinstance(path, str):
            if m := _CALLBACK_PROVIDER.match(path):
                found.setdefault("provider", m.group(1))
            elif m := _TASK_PATH.match(path):
                found.setdefault("task_id", m.group(1))
    # An access line's query string is not a field list; other messages' key=value are.
    pairs = [] if record.name == "uvicorn.access" else list(_KEY_VALUE.finditer(message))
    for m in pairs:
        key, value = m.group(1), m.group(2)
        found.setdefault(key, value if key.endswith("id") else _scalar(value))
    if "event" not in found:
        prefix = message[: pairs[0].start()] if pairs else ""
        slug = re.sub(r"[^a-z0-9]+", "_", prefix.lower()).strip("_")
        found["event"] = slug[:60] if slug else _LOGGER_EVENTS.get(record.name, record.name)
    ordered = {"event": found.pop("event")}
    for key in ("provider", "task_id"):
        if key in found:
            ordered[key] = found.pop(key)
    ordered.update(found)
    return ordered


def _scalar(text: str) -> Any:
    """``42`` -> 42, ``True`` -> true, ``None`` -> null; anything else stays a string."""
    if text in _WORDS:
        return _WORDS[text]
    if text.isascii() and text.isdigit() and len(text) < 16:
        return int(text)
    return text


_WORDS: dict[str, Any] = {"True": True, "False": False, "None": None}
#: Events for libraries' free-text lines.
_LOGGER_EVENTS = {"uvicorn.error": "server", "py.warnings": "warning"}


def _timestamp(record: logging.LogRecord) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z"
    )


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, fields, message."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        entry.update(fields_of(record))
        entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        # default=str: an extra that is not JSON (a Path, an enum) still gives one line.
        return redact(json.dumps(entry, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``, plus any structured field the message lacks."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """The default ``asctime`` (local time, milliseconds); the seconds made once a second."""
        second = int(record.created)
        cached = self._cached  # one tuple: threads never see a second with another's text
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second)))
            self._cached = cached
        return f"{cached[1]},{int(record.msecs):03d}"

    _cached: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        message = record.message  # set by super().format
        fields = vars(record)
        missing = []
        if fields.keys() - _NOT_SHOWN:  # most records have no extra field: one set operation
            extras = {k: v for k, v in fields.items() if k not in _NOT_SHOWN and k[0] != "_"}
            missing = [f"{k}={v}" for k, v in extras.items() if f"{k}={v}" not in message]
        if missing:
            head, sep, tail = line.partition("\n")  # keep tracebacks after the fields
            line = f"{head} {' '.join(missing)}{sep}{tail}"
        return redact(line)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is now (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:  # noqa: D401 - property
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


_previous_factory = logging.getLogRecordFactory()


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _previous_factory(*args, **kwargs)
    redact_record(record)
    record._redacted = True  # (not a field: starts with _)
    return record


def configure(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send every logger (taskhook, uvicorn, libraries) through one redacting handler.

    Idempotent: calling it again replaces the handler it installed before and
    leaves other handlers on the root logger (pytest's caplog) in place.
    """
    logging.setLogRecordFactory(_redacting_factory)
    logging.captureWarnings(True)
    # What no line of ours shows is not collected (the logging HOWTO's "Optimization"):
    # the caller's file and line, the thread, the process. A callback's line is made
    # on the event loop, so each saves CPU on the busiest path.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = _StderrHandler()
    handler.addFilter(RedactTokens())
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    handler._taskhook = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_taskhook", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn installs its own handlers when it has a log config; ours replace them.
    for name in ("taskhook", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
        logger.setLevel(level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def print_banner(text: str, log_format: str) -> None:
    """Print the one-time secrets banner: as is, or as one JSON line with LOG_FORMAT=json."""
    if log_format == "json":
        entry = {
            "time": _timestamp(logging.makeLogRecord({})),
            "level": "warning",
            "logger": "taskhook.app",
            "event": "secrets_generated",
            "message": text,
        }
        print(json.dumps(entry, ensure_ascii=False), file=sys.stdout, flush=True)
    else:
        print(text, file=sys.stdout, flush=True)
