"""A user's error in a step that KFP retries, written into the step's output for the next step to raise: no retry repeats it."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from longtail import errors
from longtail.atomic_file import write_text
from longtail.credentials import redact
from longtail.errors import LongtailError
from longtail.file_bounds import read_bounded

# The record a step leaves in its output folder when a user's error stopped it.
HANDED_ON_FILE = "user-error.json"
# Bigger is not a record this module wrote: refused unread.
RECORD_MAX_BYTES = 64 * 1024


@contextlib.contextmanager
def handed_on(out_dir: str | Path, *, retried: bool) -> Iterator[None]:
    """In a step KFP retries, end the step normally on a user's error and leave it for the next step.

    KFP's retry policy is a count and a backoff applied to every non-zero exit: it cannot tell a
    user's error (a `longtail.errors` error: bad input, a refused credential, a loss gone NaN) from a
    killed pod, and retrying the first only repeats it. So where `retried`, such an error is written
    to `out_dir`/user-error.json, printed as the step's last line, and swallowed: the step succeeds
    once, and the next step, which has no retries and every path after this one passes, raises it
    (raise_handed_on). Any other failure leaves the step non-zero, and KFP retries it. Where not
    `retried`, errors pass through unchanged (docs/safety.md "Fail once").

    The code after the block runs either way: a step returns its outputs' empty values there.
    """
    if not retried:
        yield
        return
    try:
        yield
    except LongtailError as e:
        name, message = type(e).__name__, redact(str(e))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        write_text(Path(out_dir) / HANDED_ON_FILE, json.dumps({"error": name, "message": message}),
                   what="handed-on error")
        print(f"{name}: {message} (not retried: handed on to the next step, which fails the run)",
              file=sys.stderr)


def raise_handed_on(folder: str | Path, step: str) -> None:
    """Raise the user's error the `step` step handed on in `folder` (its output), if it left one.

    Raises:
        LongtailError (the recorded class, e.g. DataError): "the train step stopped: ...".
    """
    path = Path(folder) / HANDED_ON_FILE
    if not path.is_file():
        return
    try:
        data = read_bounded(path, f"the {step} step's error record", RECORD_MAX_BYTES)
        if data is None:
            return
        record = json.loads(data.decode("utf-8"))
        name, message = str(record["error"]), str(record["message"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LongtailError(f"the {step} step stopped on an error, but its record {path} cannot be read: {e}") from None
    cls = getattr(errors, name, LongtailError)
    if not (isinstance(cls, type) and issubclass(cls, LongtailError)):
        cls = LongtailError
    raise cls(f"the {step} step stopped: {message}")
