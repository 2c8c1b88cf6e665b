"""Keep secrets out of logs: API keys passed as ``?api_key=`` are redacted in access logs."""

from __future__ import annotations

import logging
import re

_SECRET_PARAMETER = re.compile(r"(api_key=)[^&\s\"']+")


def redact(text: str) -> str:
    return _SECRET_PARAMETER.sub(r"\1[redacted]", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        record.msg = redact(record.msg) if isinstance(record.msg, str) else record.msg
        return True


def install() -> None:
    """Attach the filter to uvicorn's access and error loggers."""
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn"):
        logging.getLogger(name).addFilter(RedactSecrets())
