"""Stopping a run the ordinary ways (issue 26): SIGTERM and SIGINT at random moments, to the launcher or
to one rank, a second signal inside a save, a rank that dies. Real launches, real signals.

Every stop must end with one line, exit code 128 + the signal, a complete checkpoint of the step it
stopped after (or, after a second signal, nothing published half-way), no process and no lock left;
and the stopped-and-continued run must equal an uninterrupted one bit for bit: every step's loss,
the final weights, EMA and run state. The random moments are seeded (``GROWTH_FAULT_SEED``).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from growth import checkpoint as ckpt
from tests.checkpoint.test_reliability import (
    JOBS,
    ROOT,
    SEED,
    base,
    bin_path,
    check_sound,
    env,
    final_state,
    latest_step,
    same_tensors,
    temporaries,
)
from tests.support.distributed import free_port
from tests.support.jobs import tiny_run_overrides

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

STEPS = 16
RUN = (f"train.max_steps={STEPS}", "train.save_interval=4", "train.eval_interval=4")
PACE_S = 0.15  # each step sleeps this long in the signalled launches, so a signal lands inside the loop


def spec_file(tmp: Path, name: str, overrides: list[str], faults: list) -> str:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps({"kind": "train", "overrides": overrides, "faults": faults}))
    return str(path)


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    """A launch in its own session (so the test can find all of its processes), output to ``log``."""
    handle = log.open("w")
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env(), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def session(process: subprocess.Popen) -> list[psutil.Process]:
    """Every live process of the launch's session (the launcher, its helpers and the ranks)."""
    found = []
    for candidate in psutil.process_iter(["pid"]):
        try:
            if os.getsid(candidate.pid) == process.pid and candidate.status() != psutil.STATUS_ZOMBIE:
                found.append(candidate)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def logged(run_dir: Path) -> int:
    path = run_dir / "losses.txt"
    return path.stat().st_size if path.is_file() else 0


def wait_for_loop(process: subprocess.Popen, run_dir: Path, log: Path, before: int) -> None:
    """Until the launch has taken its first optimizer step (the loss log grew past ``before`` bytes)."""
    deadline = time.monotonic() + 240
    while logged(run_dir) <= before:
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the launch never reached its training loop"
        time.sleep(0.02)


def finish(process: subprocess.Popen, log: Path, timeout: float = 240) -> tuple[int, str]:
    """Wait for the launch and every process of its session; its exit code and output."""
    rc = process.wait(timeout=timeout)
    deadline = time.monotonic() + 60
    while session(process):
        assert time.monotonic() < deadline, f"processes left: {[p.cmdline()[:4] for p in session(process)]}"
        time.sleep(0.1)
    return rc, log.read_text()


def stop_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("stopped ", "error:"))]


def losses(run_dir: Path) -> dict[int, str]:
    """step -> loss of the run's applied steps; a step redone after a stop counts as its last try."""
    table = {}
    for line in (run_dir / "losses.txt").read_text().splitlines():
        step, loss = line.split()
        table[int(step)] = loss
    return table


def check_stopped(run_dir: Path, rc: int, text: str, reason: str, code: int) -> int:
    """One ``stopped by REASON at step N`` line, exit code ``code``, a complete checkpoint of step N
    that ``latest`` names, and no lock or temporary left. Returns N."""
    lines = stop_lines(text)
    assert rc == code, text[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"stopped by {reason}") and " at step " in lines[0], text[
        -3000:
    ]
    assert "Traceback" not in text, text[-3000:]
    step = int(lines[0].split(" at step ")[1].split(";")[0])
    folder = run_dir / "checkpoints" / ckpt.tag_for(step)
    assert f"checkpoint: {folder};" in lines[0] and "continue with: " in lines[0], lines[0]
    assert ckpt.latest_checkpoint(run_dir / "checkpoints") == folder
    check_sound(run_dir)
    assert not (run_dir / ".lock").exists() and temporaries(run_dir) == []
    return step


def check_equal(reference: Path, chain: Path, steps: int, tolerance: float = 0.0) -> None:
    final = f"checkpoints/{ckpt.tag_for(steps)}"
    assert (
        same_tensors(reference / final / "model.safetensors", chain / final / "model.safetensors")
        <= tolerance
    )
    assert same_tensors(reference / final / "ema.safetensors", chain / final / "ema.safetensors") <= tolerance
    assert final_state(reference, steps) == final_state(chain, steps)
    assert losses(reference) == losses(chain)


def test_sigterm_sigint_and_a_second_signal_in_a_save_then_continue_bit_exactly(corpus, tmp_path):
    """1 process. SIGTERM, then SIGINT, each at a random moment of the loop: each launch finishes its
    step, saves it and exits 143 / 130 with one line. Then SIGTERM, and a second SIGTERM while that
    stop's save is stalled before ``complete``: it exits at once, the half-written folder is never
    taken for a checkpoint. A last launch finishes; everything equals an uninterrupted run."""
    rng = random.Random(SEED)
    overrides = [*base(corpus, *RUN)]
    reference = tmp_path / "reference"
    reference.mkdir()
    log = tmp_path / "reference.log"
    job = spec_file(
        tmp_path,
        "reference",
        [*overrides, f"train.out_dir={reference}"],
        [["LossLog", {"path": str(reference / "losses.txt")}]],
    )
    rc, text = finish(start([sys.executable, JOBS, job], log), log)
    assert rc == 0, text[-3000:]

    chain = tmp_path / "chain"
    chain.mkdir()
    log_losses = ["LossLog", {"path": str(chain / "losses.txt")}]
    stops = []
    for index, name in enumerate(("SIGTERM", "SIGINT")):
        before, size = latest_step(chain), logged(chain)
        job = spec_file(
            tmp_path,
            f"chain{index}",
            [*overrides, f"train.out_dir={chain}"],
            [log_losses, ["Pace", {"seconds": PACE_S}]],
        )
        log = tmp_path / f"chain{index}.log"
        process = start([sys.executable, JOBS, job], log)
        wait_for_loop(process, chain, log, size)
        time.sleep(rng.uniform(0.0, PACE_S * (STEPS - before) / 3))
        process.send_signal(signal.Signals[name])
        rc, text = finish(process, log)
        step = check_stopped(chain, rc, text, name, 128 + signal.Signals[name].value)
        assert before < step < STEPS
        stops.append(step)

    # A second SIGTERM inside the stop's save: exits at once, nothing of that save is published.
    before, size = latest_step(chain), logged(chain)
    job = spec_file(
        tmp_path,
        "twice",
        [*overrides, f"train.out_dir={chain}"],
        [log_losses, ["Pace", {"seconds": PACE_S}], ["StallInSave", {"seconds": 120}]],
    )
    log = tmp_path / "twice.log"
    process = start([sys.executable, JOBS, job], log)
    wait_for_loop(process, chain, log, size)
    first = time.monotonic()
    process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 120
    while True:  # every file of the stop's save written: stalled before `complete` (a scheduled save that
        # completed between the resume and the signal is not the stop's: it is skipped)
        saving = [
            f
            for f in ckpt.step_folders(chain / "checkpoints")
            if int(f.name[5:]) > before and not (f / ckpt.COMPLETE).exists()
        ]
        if saving and (saving[0] / ckpt.RUN_STATE).is_file():
            break
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    time.sleep(max(0.0, 2.5 - (time.monotonic() - first)))  # past RELAY_S: a second request, not a relay
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    rc, text = finish(process, log)
    assert time.monotonic() - sent < 30  # at once, not after the 120 s stall
    lines = stop_lines(text)
    assert rc == 143 and len(lines) == 1 and lines[0].startswith("stopped at once by a second SIGTERM"), text
    published = latest_step(chain)
    assert not (saving[0] / ckpt.COMPLETE).exists() and before <= published < int(saving[0].name[5:])
    check_sound(chain)

    job = spec_file(tmp_path, "last", [*overrides, f"train.out_dir={chain}"], [log_losses])
    log = tmp_path / "last.log"
    rc, text = finish(start([sys.executable, JOBS, job], log), log)
    assert rc == 0 and f"resumed from {chain / 'checkpoints' / ckpt.tag_for(published)}" in text, text[-3000:]
    print(f"stopped after steps {stops}, then a second SIGTERM in the save of {saving[0].name}")
    check_equal(reference, chain, STEPS)
    assert not (chain / ".lock").exists() and temporaries(chain) == []


def deepspeed(*args: str) -> list[str]:
    return [bin_path("deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()), *args]


def rank_pid(process: subprocess.Popen, rank: int) -> int:
    for candidate in session(process):
        try:
            if "reliability_jobs" in " ".join(candidate.cmdline()) and candidate.environ().get("RANK") == str(
                rank
            ):
                return candidate.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no rank {rank} among {[p.cmdline()[:4] for p in session(process)]}")


def test_two_ranks_stop_together_on_sigterm_to_the_runner_or_to_one_rank_and_a_dead_rank_is_one_line(
    corpus, tmp_path
):
    """``deepspeed --num_gpus 2``, ZeRO-1. SIGTERM to the ``deepspeed`` runner (which does not pass it
    on: the ranks see it end) and SIGTERM to rank 1 alone, each at a random moment: both ranks stop
    after the same step with a checkpoint; the continued run equals an uninterrupted one bit for bit.
    Then ``kill -9`` of rank 0 mid-run: rank 1 stops with one line and exit code 2, no traceback."""
    rng = random.Random(SEED + 1)
    overrides = [*base(corpus, *RUN, "train.zero_stage=1")]
    reference = tmp_path / "reference"
    reference.mkdir()
    log = tmp_path / "reference.log"
    job = spec_file(
        tmp_path,
        "reference",
        [*overrides, f"train.out_dir={reference}"],
        [["LossLog", {"path": str(reference / "losses.txt")}]],
    )
    rc, text = finish(start(deepspeed(JOBS, job), log), log)
    assert rc == 0, text[-3000:]

    chain = tmp_path / "chain"
    chain.mkdir()
    faults = [["LossLog", {"path": str(chain / "losses.txt")}], ["Pace", {"seconds": PACE_S}]]
    for index, target in enumerate(("runner", "rank 1")):
        before, size = latest_step(chain), logged(chain)
        log = tmp_path / f"chain{index}.log"
        job = spec_file(tmp_path, f"chain{index}", [*overrides, f"train.out_dir={chain}"], faults)
        process = start(deepspeed(JOBS, job), log)
        wait_for_loop(process, chain, log, size)
        time.sleep(rng.uniform(0.0, PACE_S * (STEPS - before) / 3))
        os.kill(process.pid if target == "runner" else rank_pid(process, 1), signal.SIGTERM)
        rc, text = finish(process, log)
        if target == "runner":  # the runner itself dies of it (rc -15); the ranks say why they stopped
            step = check_stopped(chain, rc, text, "the end of its launcher", -signal.SIGTERM)
        else:
            step = check_stopped(chain, rc, text, "SIGTERM (to another rank)", 143)
        assert before < step < STEPS

    log = tmp_path / "last.log"
    rc, text = finish(
        start(
            deepspeed(JOBS, spec_file(tmp_path, "last", [*overrides, f"train.out_dir={chain}"], faults[:1])),
            log,
        ),
        log,
    )
    assert rc == 0, text[-3000:]
    check_equal(reference, chain, STEPS, tolerance=1e-6)  # ZeRO-1 on 2 ranks: as the kill -9 test allows

    dead = tmp_path / "dead"
    dead.mkdir()
    log = tmp_path / "dead.log"
    faults = [["LossLog", {"path": str(dead / "losses.txt")}], ["Pace", {"seconds": PACE_S}]]
    process = start(
        deepspeed(JOBS, spec_file(tmp_path, "dead", [*overrides, f"train.out_dir={dead}"], faults)), log
    )
    wait_for_loop(process, dead, log, 0)
    time.sleep(rng.uniform(0.0, PACE_S * STEPS / 3))
    os.kill(rank_pid(process, 0), signal.SIGKILL)
    rc, text = finish(process, log)
    lines = stop_lines(text)
    assert rc != 0 and len(lines) == 1 and "another rank of this run ended" in lines[0], text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    check_sound(dead)


def without_torchrun_signal_traceback(text: str) -> str:
    """``text`` less the traceback torchrun's launcher prints when it gets SIGTERM (ending in
    ``torch.distributed.elastic.multiprocessing.api.SignalException: Process N got signal: 15``)."""
    return re.sub(
        r"Traceback \(most recent call last\):\n(?:[ \t].*\n)*?torch\.distributed\.elastic\.multiprocessing\.api"
        r"\.SignalException: Process \d+ got signal: 15\n?",
        "",
        text,
    )


def test_torchrun_and_accelerate_pass_sigterm_on_and_the_ranks_stop_with_a_checkpoint(corpus, tmp_path):
    """``torchrun --nproc_per_node 2`` and ``accelerate launch`` (one process) forward SIGTERM to the
    ranks: each launch stops after a step with a complete checkpoint of it and leaves no process."""
    overrides = [*tiny_run_overrides(*corpus), "train.max_steps=100000", "train.save_interval=1000"]
    launchers = {
        "torchrun": [bin_path("torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port())],
        "accelerate": [
            bin_path("accelerate"),
            "launch",
            "--cpu",
            "--num_processes",
            "1",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
        ],
    }
    for name, launcher in launchers.items():
        out = tmp_path / name
        out.mkdir()
        job = spec_file(
            tmp_path,
            name,
            [*overrides, f"train.out_dir={out}"],
            [["LossLog", {"path": str(out / "losses.txt")}], ["Pace", {"seconds": 0.05}]],
        )
        log = tmp_path / f"{name}.log"
        process = start([*launcher, JOBS, job], log)
        wait_for_loop(process, out, log, 0)
        process.send_signal(signal.SIGTERM)
        rc, text = finish(process, log)
        lines = [line for line in stop_lines(text) if line.startswith("stopped by SIGTERM")]
        assert len(lines) == 1 and rc != 0, (name, text[-3000:])
        step = int(lines[0].split(" at step ")[1].split(";")[0])
        assert ckpt.latest_checkpoint(out / "checkpoints") == out / "checkpoints" / ckpt.tag_for(step), name
        # torchrun itself answers SIGTERM with torch's own SignalException traceback (its launcher's code, not
        # the ranks'; docs/reliability.md): only that one may appear, the ranks print none
        ours = without_torchrun_signal_traceback(text) if name == "torchrun" else text
        assert not (out / ".lock").exists() and "Traceback" not in ours, (name, text[-3000:])
