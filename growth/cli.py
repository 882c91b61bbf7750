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


def exit_after_run(code: int) -> None:
    """End a finished training process now, with ``code``: the run has saved, closed and printed everything, and
    what remains is interpreter finalization, where the teardown of gloo and DeepSpeed state in whatever order it
    picks has aborted a rank that finished cleanly (exit -6, "terminate called without an active exception", in
    about 3% of 2-rank CPU runs in CI)."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
