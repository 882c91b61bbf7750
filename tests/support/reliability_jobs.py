"""Launches for the fault-injection suite (``tests/checkpoint/test_reliability.py``), run as
``python tests/support/reliability_jobs.py SPEC.json`` (also under ``deepspeed`` / ``torchrun``; the
repository root on ``PYTHONPATH``):

- ``{"kind": "train", "overrides": [...], "faults": [["SelfKill", {...}], ...]}``: one training
  launch with fault callbacks (``tests/support/faults.py``), handled as ``launch/pretrain.py`` handles it;
- ``{"kind": "cases", "cases": [[name, argv], ...], "out": FILE}``: many ``launch/pretrain.py``
  command lines in one process (one import of DeepSpeed), each one's exit code, stderr and any
  escaped traceback written to ``out`` as JSON.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback


def train_with_faults(spec: dict) -> int:
    """``launch/pretrain.py``'s ``main`` (signals, errors and exit codes as the command has them) with
    the fault callbacks added."""
    from growth.train.run import main
    from tests.support import faults

    callbacks = [getattr(faults, name)(**kwargs) for name, kwargs in spec.get("faults", [])]
    return main(spec["overrides"], callbacks=callbacks)


def many_cases(spec: dict) -> int:
    from growth.train.run import main

    results = {}
    for name, argv in spec["cases"]:
        err, out = io.StringIO(), io.StringIO()
        escaped = ""
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                rc = main(argv)
            except BaseException:  # noqa: BLE001 - a traceback is what the cases must not produce
                rc, escaped = -1, traceback.format_exc()
        results[name] = {"rc": rc, "stderr": err.getvalue(), "stdout": out.getvalue(), "traceback": escaped}
    with open(spec["out"], "w") as handle:
        json.dump(results, handle, indent=1)
    return 0


def error_on_every_rank_job(world, overrides: list[str], result_prefix: str) -> None:
    """For ``run_distributed``: ``train()`` must fail; each rank writes the ConfigError it got."""
    from growth.config import ConfigError, load_config
    from growth.train.run import train

    try:
        train(load_config(overrides=overrides), world)
        message = "no error"
    except ConfigError as err:
        message = f"ConfigError: {err}"
    with open(f"{result_prefix}.{world.rank}", "w") as handle:
        handle.write(message)


if __name__ == "__main__":
    spec_file = next(a for a in sys.argv[1:] if not a.startswith("--local"))  # deepspeed adds --local_rank=N
    with open(spec_file) as handle:
        job = json.load(handle)
    sys.exit({"train": train_with_faults, "cases": many_cases}[job["kind"]](job))
