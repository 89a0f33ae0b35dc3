"""Credentials inside URIs (`scheme://user:password@host`): the one place that finds, hides or removes them."""

from __future__ import annotations

import logging
import re
import urllib.parse
from typing import Any

# `scheme://userinfo@`, in any scheme (http, s3, postgresql, ...): userinfo runs to the last `@`
# before the host (a raw `@` in a password included), and never holds `/`, whitespace or quotes. A user name alone (`token@`) may be
# the secret itself (a token used as the user), so it is hidden too; with a password, the user
# name stays readable and only the password is hidden.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s'\"<>]+)@")
REDACTED = "***"


def _hidden(match: re.Match[str]) -> str:
    user, colon, _ = match["userinfo"].partition(":")
    shown = f"{user}:{REDACTED}" if colon else REDACTED
    return f"{match['scheme']}{shown}@"


def redact(text: str) -> str:
    """Hide the userinfo of every URI in `text`.

    'http://bob:pa55@host/x' -> 'http://bob:***@host/x'; 's3://TOKEN@bucket/k' -> 's3://***@bucket/k'.
    Text without a URI, or URIs without userinfo, come back unchanged.
    """
    return _USERINFO.sub(_hidden, text)


def split_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    """(`uri` without userinfo, user name, password); user and password are None where the URI has none.

    Percent-escapes in the user name and password are decoded (a password may hold `@` as %40).
    """
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    bare = urllib.parse.urlunsplit(parts._replace(netloc=host))
    return bare, urllib.parse.unquote(user), urllib.parse.unquote(password) if colon else None


def redact_log_records() -> None:
    """Make every log record, of longtail or any library, carry its message and traceback redacted.

    A record factory sees each record as it is made, before any handler (MLflow's own included,
    which do not propagate to the root logger) formats it. Installed once, at the CLI edge.
    """
    make = logging.getLogRecordFactory()
    if getattr(make, "redacts", False):
        return

    def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's to report, unredacted args aside
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    redacted_record.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacted_record)
