"""JSON log lines that carry the trace id of the request being served."""

import contextvars
import logging
import re

import orjson

from chat.json import utc_iso

trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)

# Attributes every LogRecord has; anything else was passed in `extra=` and is logged.
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "trace_id"}


class TraceIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = trace_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", None) or trace_id_var.get(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


# What a request line, a header or a path looks like inside a message written by
# someone else (gunicorn): a quoted text, a path, a UUID (a guest's key), a token.
_QUOTED_RE = re.compile(r"""'[^']*'|"[^"]*\"""")
_PATH_RE = re.compile(r"/\S*")
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_TOKEN_RE = re.compile(r"\b[0-9a-fA-F]{32,}\b")


def redact_request_text(text: str) -> str:
    """`text` without what a client sent: quoted parts, paths, UUIDs and token-like hex go."""
    text = _QUOTED_RE.sub("'[redacted]'", text)
    text = _PATH_RE.sub("/[redacted]", text)
    text = _UUID_RE.sub("[redacted]", text)
    return _TOKEN_RE.sub("[redacted]", text)


class RedactRequestTextFilter(logging.Filter):
    """For gunicorn's own lines (gunicorn.error): a malformed request line or header is
    logged with the client's text in it ("Invalid request from ip=...: Invalid HTTP
    request line: 'GET /api/v1/chat/guest/<key>/messages ...'"), and a guest's path holds
    its key, its only credential. The message is kept, what the client sent is not."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_request_text(record.getMessage())
        record.args = ()
        return True
