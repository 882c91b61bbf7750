"""The tools' one way to answer bad input: a single ``error: ...`` line and exit code 2 (docs/design.md Sec. 1).

The tools write under temporary names and rename (``growth/checkpoint/atomic.py``), so a failure leaves
nothing half-written at ``--out``; this module only turns the failure into the line the user reads.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from growth.checkpoint.atomic import failed_write_line
from growth.errors import UserError

T = TypeVar("T")


def run_reporting_errors(
    call: Callable[[], T], out: Path | str, errors: tuple[type[Exception], ...] = ()
) -> T | None:
    """``call()``; a user error (``growth/errors.py``: config, data, checkpoint; or one of ``errors``) and a failed write under ``out`` (a full
    disk, no permission) become one ``error:`` line on stderr and ``None`` (the tool exits 2)."""
    try:
        return call()
    except (UserError, *errors) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
    except OSError as err:
        print(failed_write_line(err, out), file=sys.stderr, flush=True)
    return None
