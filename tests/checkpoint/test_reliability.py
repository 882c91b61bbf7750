"""Fault injection, end to end: lose nothing, ever (issue 15).

Real launches (``python``, ``deepspeed --num_gpus 2``, ``torchrun``) are killed with SIGKILL at
random moments and in the middle of saves, pointed at damaged, truncated and deleted files, run out
of disk, and launched twice on one directory. Every launch must end in an exact continuation or in
one ``error:`` line with exit code 2 and nothing lost. Faults come in through callbacks
(``tests/support/faults.py``) or from outside (signals, damaged files, a small tmpfs); nothing is patched.
The random moments are seeded (``GROWTH_FAULT_SEED``, default 15).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from growth import checkpoint as ckpt
from tests.support.distributed import free_port, run_distributed
from tests.support.jobs import tiny_run_overrides

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
PRETRAIN = str(ROOT / "launch/pretrain.py")
JOBS = str(ROOT / "tests/support/reliability_jobs.py")
SEED = int(os.environ.get("GROWTH_FAULT_SEED", "15"))


# -- helpers ---------------------------------------------------------------------------------------
def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def run(cmd: list[str], timeout: int = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout, **kwargs)


def deepspeed(*args: str) -> list[str]:
    return [bin_path("deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()), *args]


def job(tmp: Path, name: str, spec: dict) -> list[str]:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(spec))
    return [JOBS, str(path)]


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def one_clean_error(result: subprocess.CompletedProcess, words: str) -> None:
    text = result.stdout + result.stderr
    errors = error_lines(text)
    assert result.returncode == 2, text[-3000:]
    assert len(errors) == 1 and words in errors[0], text[-3000:]
    assert "Traceback" not in text and "Connection closed by peer" not in text, text[-3000:]


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def same_tensors(a: Path, b: Path) -> float:
    """Max |difference| between two safetensors files (0.0: bit-identical); asserts the same names."""
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    return max((x[k] - y[k]).abs().max().item() for k in x)


def final_state(run_dir: Path, step: int) -> dict:
    state = json.loads((run_dir / f"checkpoints/{ckpt.tag_for(step)}/run_state.json").read_text())
    return {k: state[k] for k in ("step", "tokens_seen", "skipped_steps", "sampler")}


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if re.search(r"\.tmp\d+$", p.name)]


def check_sound(run_dir: Path) -> None:
    """What a kill may leave: ``latest`` names a complete checkpoint and every complete one verifies."""
    checkpoints = run_dir / "checkpoints"
    latest = ckpt.latest_checkpoint(checkpoints) if (checkpoints / "latest").is_file() else None
    for folder in ckpt.complete_folders(checkpoints):
        ckpt.verify_checkpoint(folder)
    assert latest is None or ckpt.step_folders(checkpoints)  # nothing dangling


def latest_step(run_dir: Path) -> int:
    folder, _ = ckpt.resume_checkpoint(run_dir / "checkpoints")
    return int(folder.name[5:]) if folder is not None else 0


def base(corpus, *extra: str) -> list[str]:
    """Dropout and EMA on: an exact continuation needs RNG, EMA, sampler, optimizer and schedule."""
    return [*tiny_run_overrides(*corpus), "model.dropout=0.1", "train.ema_decay=0.9", *extra]


@pytest.fixture(scope="module")
def finished(corpus, tmp_path_factory) -> Path:
    """A finished 1-rank run: steps 2 and 4 saved."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = run([sys.executable, PRETRAIN, *base(corpus), f"train.out_dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    return out


# -- kill -9 at random moments and mid-save --------------------------------------------------------
STEPS = 24
KILL_RUN = (
    f"train.max_steps={STEPS}",
    "train.save_interval=2",
    "train.eval_interval=4",
    "train.keep_checkpoints=2",
)


def training_window(stdout: str) -> float:
    """Seconds the loop of a run took (its summary line: ``done: step N (...), ..., S s``)."""
    done = next(line for line in stdout.splitlines() if line.startswith("done:"))
    return float(re.search(r"([\d.]+) s$", done).group(1))


def kill_at_random_moment(cmd: list[str], run_dir: Path, window: float, rng: random.Random) -> str:
    """Start ``cmd``; once its loop is about to start, SIGKILL its whole process group at a uniformly
    random moment of the training window. Returns "killed" or "finished" (done before the kill)."""
    process = subprocess.Popen(
        cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while process.poll() is None and not any(
        (run_dir / "tensorboard").glob(f"events.out.tfevents.*.{process.pid}.*")
    ):
        assert time.monotonic() < deadline, "the launch never reached the training loop"
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, window))
    outcome = "finished" if process.poll() is not None else "killed"
    if outcome == "killed":
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return outcome


def test_kill_9_at_random_moments_and_mid_save_then_resume_bit_exactly(corpus, tmp_path):
    """One 24-step run keeping 2 checkpoints, killed again and again (SIGKILL from outside at random
    moments; from inside in the middle of a save, and after every file of a save but before
    ``complete``), resumed each time: it never falls behind, and the final weights, EMA and run
    state equal an uninterrupted run's bit for bit."""
    rng = random.Random(SEED)
    overrides = base(corpus, *KILL_RUN)
    reference = tmp_path / "reference"
    result = run([sys.executable, PRETRAIN, *overrides, f"train.out_dir={reference}"])
    assert result.returncode == 0, result.stderr[-3000:]
    window = training_window(result.stdout)

    chain = tmp_path / "chain"
    (chain / "tensorboard").mkdir(parents=True)
    trials = ["mid_save", "random", "pre_publish", "mid_save", "random", "random"]
    outcomes, mid_save = [], 0
    for index, kind in enumerate(trials):
        start, began = latest_step(chain), time.time()
        if start == STEPS:
            outcomes.append((kind, "skipped: the run was done"))
            continue
        if kind == "random":  # from outside, anywhere in the next third of the run (or what is left of it)
            outcome = kill_at_random_moment(
                [sys.executable, PRETRAIN, *overrides, f"train.out_dir={chain}"],
                chain,
                window * min(STEPS - start, STEPS // 3) / STEPS,
                rng,
            )
        else:
            step = start + 2 * rng.randint(1, 2) if start + 4 <= STEPS else start + 2  # a save step
            fault = {"where": kind, "step": step, "fraction": rng.uniform(0.05, 0.8)}
            spec = {
                "kind": "train",
                "overrides": [*overrides, f"train.out_dir={chain}"],
                "faults": [["SelfKill", fault]],
            }
            result = run([sys.executable, *job(tmp_path, f"trial{index}", spec)])
            outcome = "killed" if result.returncode == -signal.SIGKILL else f"rc {result.returncode}"
            assert outcome == "killed", result.stderr[-3000:]
        check_sound(chain)
        now = latest_step(chain)
        assert now >= start  # never behind where it was: retention deletes only behind a newer complete one
        inside = [
            f.name
            for f in ckpt.step_folders(chain / "checkpoints")  # a save this launch began
            if int(f.name[5:]) > now and not (f / ckpt.COMPLETE).is_file() and f.stat().st_mtime >= began
        ]
        mid_save += bool(inside)
        outcomes.append(
            (
                kind,
                f"{outcome}: resumed at step {start}, latest now {now}"
                + (f", {inside[0]} left incomplete" if inside else ""),
            )
        )
    result = run([sys.executable, PRETRAIN, *overrides, f"train.out_dir={chain}"])
    assert result.returncode == 0, result.stderr[-3000:]
    print("kill trials:", *outcomes, f"{mid_save} landed inside a save", sep="\n  ")

    final = f"checkpoints/{ckpt.tag_for(STEPS)}"
    assert same_tensors(reference / final / "model.safetensors", chain / final / "model.safetensors") == 0.0
    assert same_tensors(reference / final / "ema.safetensors", chain / final / "ema.safetensors") == 0.0
    assert final_state(reference, STEPS) == final_state(chain, STEPS)
    assert sum(o.startswith("killed") for _, o in outcomes) >= 5
    assert mid_save >= 2  # the mid-save and pre-publish kills did land inside saves
    assert [f.name for f in ckpt.complete_folders(chain / "checkpoints")] == [
        ckpt.tag_for(STEPS - 2),
        ckpt.tag_for(STEPS),
    ]
    assert all((f / ckpt.COMPLETE).is_file() for f in ckpt.step_folders(chain / "checkpoints"))
    assert temporaries(chain) == [] and not (chain / ".lock").exists()


def test_kill_9_of_the_deepspeed_runner_then_a_second_launch_then_the_ranks(corpus, tmp_path):
    """2 ranks, ZeRO-1. ``kill -9`` of the ``deepspeed`` runner leaves its ranks training; a second
    launch on the directory (another master port) stops with one line naming the holder's PID; then
    the orphaned ranks are killed mid-run, and a third launch continues exactly."""
    overrides = base(corpus, "train.max_steps=8", "train.save_interval=2", "train.zero_stage=1")
    reference = tmp_path / "reference"
    result = run(deepspeed(PRETRAIN, *overrides, f"train.out_dir={reference}"))
    assert result.returncode == 0, result.stdout[-3000:]

    shared = tmp_path / "shared"
    spec = {
        "kind": "train",
        "overrides": [*overrides, f"train.out_dir={shared}"],
        "faults": [["Stall", {"step": 5, "seconds": 120}]],
    }
    first = subprocess.Popen(
        deepspeed(*job(tmp_path, "first", spec)),
        cwd=ROOT,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while latest_step(shared) < 4 if (shared / "checkpoints").is_dir() else True:
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not reach step 4"
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGKILL)  # the runner only: its ranks go on
        first.wait()
        holder = ckpt.run_lock.holder(shared)
        pid = int(holder.split()[1])
        assert (
            Path(f"/proc/{pid}").exists() and "reliability_jobs" in Path(f"/proc/{pid}/cmdline").read_text()
        )

        second = run(deepspeed(PRETRAIN, *overrides, f"train.out_dir={shared}"))
        one_clean_error(second, f"is in use by another run (pid {pid} ")
        assert latest_step(shared) == 4 and Path(f"/proc/{pid}").exists()  # the first run is undisturbed
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # kill -9 of the orphaned ranks, in the middle of their run
    time.sleep(0.5)
    check_sound(shared)
    third = run(deepspeed(PRETRAIN, *overrides, f"train.out_dir={shared}"))
    assert third.returncode == 0, third.stdout[-3000:]
    final = "checkpoints/step_00000008"
    assert same_tensors(reference / final / "model.safetensors", shared / final / "model.safetensors") <= 1e-6
    assert same_tensors(reference / final / "ema.safetensors", shared / final / "ema.safetensors") <= 1e-6
    assert final_state(reference, 8) == final_state(shared, 8)


# -- damaged files, bad input and the reproductions: many command lines in one process -----
def damage(folder: Path, how: str) -> None:
    step4 = folder / "checkpoints/step_00000004"
    if how == "delete_run_state":
        (step4 / "run_state.json").unlink()
    elif how == "delete_model_states":
        (step4 / "mp_rank_00_model_states.pt").unlink()
    elif how == "truncate_model_states":
        path = step4 / "mp_rank_00_model_states.pt"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "alter_model_states":
        path = step4 / "mp_rank_00_model_states.pt"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "binary_latest":
        (folder / "checkpoints/latest").write_bytes(b"\x00\xffstep\xfe")
    elif how == "delete_rng":
        (step4 / "rng_rank0.pt").unlink()
    elif how == "delete_ema":
        (step4 / "ema.safetensors").unlink()
    elif how == "legacy_without_ema":  # a checkpoint from before manifests, its EMA file gone
        (step4 / "complete").write_text("ok\n")
        (step4 / "ema.safetensors").unlink()
    elif how == "no_latest":
        (folder / "checkpoints/latest").unlink()
    elif how == "no_checkpoints":  # a run directory whose checkpoints were moved away
        shutil.rmtree(folder / "checkpoints")
    elif how == "no_latest_no_step4":
        (folder / "checkpoints/latest").unlink()
        shutil.rmtree(step4)


# name -> (damage, extra overrides, words of the one error line; None: the launch must succeed)
CASES = {
    "run_state.json deleted": ("delete_run_state", [], "run_state.json is missing"),
    "model states deleted": ("delete_model_states", [], "mp_rank_00_model_states.pt is missing"),
    "model states truncated": ("truncate_model_states", [], "(truncated or overwritten)"),
    "model states altered in place": ("alter_model_states", [], "does not match its checksum"),
    "binary bytes in latest": ("binary_latest", [], "checkpoints/latest is damaged"),
    "rng_rank0.pt deleted": ("delete_rng", [], "rng_rank0.pt is missing"),
    "ema.safetensors deleted": ("delete_ema", [], "ema.safetensors is missing"),
    "old checkpoint without its EMA": ("legacy_without_ema", [], "has no EMA weights"),
    "DeepSpeed JSON is a list": (None, ["train.deepspeed_config={tmp}/list.json"], "must hold a JSON object"),
    "DeepSpeed JSON zero_optimization: 3": (
        None,
        ["train.deepspeed_config={tmp}/zero3.json"],
        "zero_optimization must be an object",
    ),
    "fp16 on CPU": (None, ["train.deepspeed_config={tmp}/fp16.json"], "enables fp16, which needs a GPU"),
    "another train.zero_stage": (
        None,
        ["train.zero_stage=1"],
        "saved under ZeRO-0; resume with train.zero_stage=0",
    ),
    "another data.seq_len": (
        None,
        ["data.seq_len=16"],
        "was trained on another data stream (seq_len 32 there, 16 now",
    ),
    "another corpus": (
        None,
        ["data.corpus={tmp}/other.txt", "data.tokenizer={run}/tokenizer.model"],
        "was trained on another data stream (n_tokens",
    ),
    "resume=none over step folders without latest": (
        "no_latest",
        ["train.resume=none"],
        "already holds checkpoints",
    ),
    "init_from that is not a checkpoint": (
        "no_checkpoints",
        ["train.init_from={tmp}/nowhere"],
        "train.init_from={tmp}/nowhere is not a checkpoint",
    ),
    "no latest: continue from the newest complete": ("no_latest_no_step4", [], None),
}


@pytest.fixture(scope="module")
def cases(corpus, finished, tmp_path_factory):
    """Every case in one process (``tests/support/reliability_jobs.py``), each on its own copy of ``finished``."""
    tmp = tmp_path_factory.mktemp("cases")
    (tmp / "list.json").write_text("[1, 2]")
    (tmp / "zero3.json").write_text('{"zero_optimization": 3}')
    (tmp / "fp16.json").write_text('{"fp16": {"enabled": true}}')
    (tmp / "other.txt").write_text(corpus[0].read_text()[:100_000])
    plan, digests = [], {}
    for index, (name, (how, extra, _)) in enumerate(CASES.items()):
        folder = tmp / f"case{index}"
        shutil.copytree(finished, folder)
        damage(folder, how)
        digests[name] = tree_digest(folder)
        plan.append(
            (
                name,
                [
                    *base(corpus),
                    "train.max_steps=4",
                    f"train.out_dir={folder}",
                    *(e.format(tmp=tmp, run=finished) for e in extra),
                ],
            )
        )
    copied = tmp / "copied_in"  # a checkpoint folder copied into a new run to continue from it
    shutil.copytree(finished / "checkpoints/step_00000002", copied / "checkpoints/step_00000002")
    plan.append(("a checkpoint folder copied into a new run", [*base(corpus), f"train.out_dir={copied}"]))
    kept = tmp / "kept"
    plan.append(
        (
            "train.keep_checkpoints=2",
            [
                *base(corpus),
                "train.max_steps=5",
                "train.save_interval=1",
                "train.keep_checkpoints=2",
                f"train.out_dir={kept}",
            ],
        )
    )
    diverged = tmp / "diverged"  # issue item 3: lr 1e9, a checkpoint every step
    blow_up = [
        *base(corpus),
        "train.lr=1e9",
        "train.warmup_steps=30",
        "train.save_interval=1",
        "train.max_steps=20",
    ]
    plan.append(("lr=1e9, save_interval=1", [*blow_up, f"train.out_dir={diverged}"]))
    plan.append(
        (
            "resume the diverged run with a sane lr",
            [*blow_up[:-1], "train.max_steps=8", "train.lr=3e-3", f"train.out_dir={diverged}"],
        )
    )
    plan.append(
        (
            "lr=1e9 before any checkpoint",
            [
                *base(corpus),
                "train.lr=1e9",
                "train.save_interval=100",
                "train.max_steps=20",
                f"train.out_dir={tmp / 'never_saved'}",
            ],
        )
    )
    plan.append(("unknown key", [*base(corpus), "train.nonsense=1", f"train.out_dir={tmp / 'unknown'}"]))
    read_only = tmp / "read_only_cache"  # a read-only tmpfs as root (root writes through chmod), else chmod
    mounted = can_mount_tmpfs(read_only)
    if mounted:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(read_only)], check=True)
    elif os.geteuid() != 0:
        read_only.mkdir()
        read_only.chmod(0o555)
    if mounted or os.geteuid() != 0:
        plan.append(
            (
                "read-only data.cache_dir",
                [*tiny_run_overrides(corpus[0], read_only), f"train.out_dir={tmp / 'read_only_run'}"],
            )
        )
    spec = {"kind": "cases", "cases": plan, "out": str(tmp / "results.json")}
    started = time.monotonic()
    try:
        result = run([sys.executable, *job(tmp, "cases", spec)], timeout=600)
    finally:
        if mounted:
            subprocess.run(["umount", str(read_only)], check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"{len(plan)} command lines in {time.monotonic() - started:.1f} s")
    return tmp, json.loads((tmp / "results.json").read_text()), digests


@pytest.mark.parametrize("name", [n for n, (_, _, words) in CASES.items() if words])
def test_each_bad_case_is_one_error_line_and_changes_nothing(cases, name):
    tmp, results, digests = cases
    result = results[name]
    index = list(CASES).index(name)
    errors = error_lines(result["stderr"])
    assert result["rc"] == 2 and not result["traceback"], result
    assert len(errors) == 1 and CASES[name][2].format(tmp=tmp) in errors[0], result["stderr"]
    assert tree_digest(tmp / f"case{index}") == digests[name]  # config.yaml included: nothing rewritten


def test_checkpoints_without_latest_are_continued_exactly(cases, finished):
    tmp, results, _ = cases
    for name, folder in (
        (
            "no latest: continue from the newest complete",
            tmp / f"case{list(CASES).index('no latest: continue from the newest complete')}",
        ),
        ("a checkpoint folder copied into a new run", tmp / "copied_in"),
    ):
        assert results[name]["rc"] == 0, results[name]
        assert "continuing from the newest complete checkpoint, step_00000002" in results[name]["stdout"]
        step4 = "checkpoints/step_00000004"
        assert (
            same_tensors(finished / step4 / "model.safetensors", folder / step4 / "model.safetensors") == 0.0
        )
        assert same_tensors(finished / step4 / "ema.safetensors", folder / step4 / "ema.safetensors") == 0.0
        assert final_state(finished, 4) == final_state(folder, 4)


def test_keep_checkpoints_keeps_the_newest_complete_ones(cases):
    tmp, results, _ = cases
    assert results["train.keep_checkpoints=2"]["rc"] == 0
    assert [f.name for f in ckpt.step_folders(tmp / "kept/checkpoints")] == ["step_00000004", "step_00000005"]


def test_divergence_leaves_latest_on_a_good_checkpoint_and_says_so(cases):
    tmp, results, _ = cases
    blown = results["lr=1e9, save_interval=1"]
    errors = error_lines(blown["stderr"])
    assert blown["rc"] == 2 and len(errors) == 1 and "non-finite steps in a row" in errors[0], blown
    named = re.search(r"the last good checkpoint, (\S+), is intact; a relaunch", errors[0])
    assert named, errors[0]
    latest = Path(named.group(1))
    assert "warning:" in blown["stderr"] and "no checkpoint written" in blown["stderr"]
    weights = load_file(str(latest / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
    resumed = results["resume the diverged run with a sane lr"]
    assert resumed["rc"] == 0 and "warning:" not in resumed["stderr"], resumed
    assert f"resumed from {latest} " in resumed["stdout"]  # what latest named after the divergence
    assert "train.lr=0.003 (the checkpoint's schedule peaked at 1e+09)" in resumed["stdout"]
    state = final_state(tmp / "diverged", 8)
    assert state["skipped_steps"] == json.loads((latest / "run_state.json").read_text())["skipped_steps"]
    never = results["lr=1e9 before any checkpoint"]
    errors = error_lines(never["stderr"])
    assert never["rc"] == 2 and len(errors) == 1 and "no checkpoint has been written" in errors[0], never
    assert "intact" not in errors[0]


def test_a_read_only_cache_dir_is_one_line_naming_it(cases):
    tmp, results, _ = cases
    if "read-only data.cache_dir" not in results:
        pytest.skip("root without tmpfs: chmod does not stop root, and nothing else makes a read-only folder")
    result = results["read-only data.cache_dir"]
    errors = error_lines(result["stderr"])
    assert result["rc"] == 2 and not result["traceback"] and len(errors) == 1, result
    assert errors[0].startswith(f"error: data.cache_dir={tmp / 'read_only_cache'}")
    assert not (tmp / "read_only_run/config.yaml").exists()


def test_a_config_error_is_one_line(cases):
    _, results, _ = cases
    result = results["unknown key"]
    assert (
        result["rc"] == 2 and len(error_lines(result["stderr"])) == 1 and "train.nonsense" in result["stderr"]
    )


# -- two ranks: printed once, the other rank exits quietly ------------------------------------------
def test_two_ranks_rank_0_only_errors_print_once_and_rank_1_exits_quietly(corpus, finished, tmp_path):
    """Under ``deepspeed --num_gpus 2`` (and once under ``torchrun``): one ``error:`` line, exit code
    2, no traceback and no "Connection closed by peer", whichever rank found the problem."""
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "a_file").write_text("")
    damaged = tmp_path / "damaged"
    shutil.copytree(finished, damaged)
    damage(damaged, "truncate_model_states")
    before = tree_digest(damaged)
    launches = {
        "empty corpus (rank 0 trains the tokenizer)": (
            [
                f"data.corpus={tmp_path}/empty.txt",
                f"data.cache_dir={tmp_path}/cache",
                f"train.out_dir={tmp_path}/e",
            ],
            "the file is empty",
        ),
        "out_dir is a file (rank 0 creates it)": (
            [f"train.out_dir={tmp_path}/a_file/run"],
            "is not writable",
        ),
        "damaged checkpoint (rank 0 verifies it)": (
            [f"train.out_dir={damaged}"],
            "(truncated or overwritten)",
        ),
        "unknown key (every rank, before the process group)": (["train.nonsense=1"], "unknown key"),
    }
    for _name, (extra, words) in launches.items():
        result = run(deepspeed(PRETRAIN, *base(corpus), *extra))
        one_clean_error(result, words)
    assert tree_digest(damaged) == before
    spec = {
        "kind": "train",
        "overrides": [*base(corpus), f"train.out_dir={tmp_path}/r1"],
        "faults": [["RaiseAt", {"step": 2, "rank": 1, "message": "rank 1 alone found something wrong"}]],
    }
    one_clean_error(run(deepspeed(*job(tmp_path, "rank1", spec))), "rank 1 alone found something wrong")
    torchrun = run(
        [
            bin_path("torchrun"),
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            PRETRAIN,
            *base(corpus),
            f"train.out_dir={tmp_path}/a_file/run",
        ]
    )
    assert torchrun.returncode != 0
    ours = [line for line in torchrun.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(ours) == 1 and "is not writable" in ours[0] and "Connection closed by peer" not in torchrun.stderr
    )


def test_a_check_rank_0_makes_fails_on_every_rank_alike_through_the_python_api(corpus, finished, tmp_path):
    """``train()`` on 2 spawned ranks (no launcher, no watcher): rank 0 verifies the checkpoint, and
    both ranks raise the same ConfigError instead of rank 1 waiting forever in the next collective."""
    from tests.support.reliability_jobs import error_on_every_rank_job

    damaged = tmp_path / "damaged"
    shutil.copytree(finished, damaged)
    damage(damaged, "alter_model_states")
    run_distributed(
        error_on_every_rank_job,
        2,
        [*base(corpus), f"train.out_dir={damaged}"],
        str(tmp_path / "error"),
        timeout_s=300,
    )
    messages = [(tmp_path / f"error.{rank}").read_text() for rank in (0, 1)]
    assert messages[0] == messages[1] and "does not match its checksum" in messages[0], messages


# -- a full disk -----------------------------------------------------------------------------------
def can_mount_tmpfs(where: Path) -> bool:
    if os.geteuid() != 0 or os.environ.get("GROWTH_TEST_NO_TMPFS"):
        return False
    where.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True
    )
    if probe.returncode != 0:
        return False
    subprocess.run(["umount", str(where)], check=True)
    return True


def limit_file_size(limit: int):
    def apply() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_is_one_line_and_leaves_the_last_checkpoint_and_no_temporaries(
    corpus, finished, tmp_path
):
    """On a 1.5 MB tmpfs (as root), the second checkpoint does not fit; elsewhere a size-limited
    writer (RLIMIT_FSIZE) fails the first. Either way: one line, no ``*.tmp<pid>`` files, no
    incomplete checkpoint, ``latest`` on the last complete one; with space again the run continues
    and ends where an uninterrupted run does."""
    disk = tmp_path / "disk"
    tmpfs = can_mount_tmpfs(disk)
    out = disk / "run"
    overrides = [*base(corpus), f"train.out_dir={out}"]
    if tmpfs:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(disk)], check=True)
    try:
        full = run(
            [sys.executable, PRETRAIN, *overrides],
            **({} if tmpfs else {"preexec_fn": limit_file_size(400_000)}),
        )
        one_clean_error(full, "no space left on the device" if tmpfs else "error:")
        assert temporaries(out) == []
        assert all((f / ckpt.COMPLETE).is_file() for f in ckpt.step_folders(out / "checkpoints"))
        assert latest_step(out) == (2 if tmpfs else 0)
        check_sound(out)
        if tmpfs:
            subprocess.run(["mount", "-o", "remount,size=30m", str(disk)], check=True)
        again = run([sys.executable, PRETRAIN, *overrides])
        assert again.returncode == 0, again.stderr[-3000:]
        step4 = "checkpoints/step_00000004"
        assert same_tensors(finished / step4 / "model.safetensors", out / step4 / "model.safetensors") == 0.0
        assert final_state(finished, 4) == final_state(out, 4)
    finally:
        if tmpfs:
            subprocess.run(["umount", str(disk)], check=False)


# -- tools/expand.py and tools/eval_sts.py ---------------------------------------------------------
def test_expand_refuses_bad_noise_reports_what_it_did_and_carries_the_data_position(
    corpus, finished, tmp_path
):
    from growth.expand.errors import GrowthError
    from growth.expand.grow_checkpoint import expand_checkpoint

    target = tmp_path / "wide.yaml"
    target.write_text(
        (finished / "config.yaml")
        .read_text()
        .replace("d_model: 32", "d_model: 64")
        .replace("n_heads: 2", "n_heads: 4")
        .replace("d_ff: 64", "d_ff: 128")
    )
    result = run(
        [
            sys.executable,
            "tools/expand.py",
            "--from",
            str(finished),
            "--to",
            str(target),
            "--out",
            str(tmp_path / "neg"),
            "--noise-std",
            "-0.01",
        ]
    )
    assert result.returncode == 2 and len(error_lines(result.stderr)) == 1 and "noise" in result.stderr
    assert not (tmp_path / "neg").exists()
    with pytest.raises(GrowthError, match="noise"):
        expand_checkpoint(finished, target, tmp_path / "nan", noise_std=float("nan"))
    assert not (tmp_path / "nan").exists()

    no_moments = tmp_path / "no_moments"
    shutil.copytree(finished, no_moments)
    (no_moments / "checkpoints/step_00000004/mp_rank_00_model_states.pt").unlink()
    report = expand_checkpoint(no_moments, target, tmp_path / "grown_reset")
    assert report["optimizer"] == "reset (the source holds no Adam moments)"
    assert not (tmp_path / "grown_reset/optimizer_state.pt").exists()

    grown = tmp_path / "grown"
    assert expand_checkpoint(finished, target, grown)["optimizer"] == "grown"
    small_position = final_state(finished, 4)["sampler"]
    assert json.loads((grown / "run_state.json").read_text())["sampler"] == small_position
    cont = run(
        [
            sys.executable,
            PRETRAIN,
            "--config",
            str(grown / "config.yaml"),
            "train.max_steps=2",
            "train.save_interval=2",
            f"train.out_dir={tmp_path / 'continued'}",
        ]
    )
    assert cont.returncode == 0, cont.stderr[-3000:]
    continued = final_state(tmp_path / "continued", 2)["sampler"]
    batch = 16  # micro_batch_size x grad_accum x world of tiny_run_overrides' defaults
    assert continued["consumed"] == small_position["consumed"] + 2 * batch


def test_eval_sts_refuses_one_row_and_constant_scores(finished, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("eval_sts_tool", ROOT / "tools/eval_sts.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    row = (
        "main-captions\tMSRvid\t2012test\t0001\t{score}\tA man is playing a flute.\tA man plays the flute.\n"
    )
    (tmp_path / "one.csv").write_text(row.format(score="5.0"))
    (tmp_path / "constant.csv").write_text(row.format(score="2.0") * 3)
    for name, words in (("one.csv", "1 scored pair"), ("constant.csv", "every pair has the same score")):
        assert tool.main(["--checkpoint", str(finished), "--data", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and words in err[0] and "nan" not in err[0]


# -- issue 26: the lock before anything is written; a finished run; latest as a directory ----------
def _race_for_the_lock(out_dir: str, start, release, results) -> None:
    """One of the racers: ``prepare_run_dir`` (the launch's first write) as a world of one."""
    from growth.config import ConfigError, load_config
    from growth.distributed import World
    from growth.train.run import prepare_run_dir

    config = load_config(overrides=[f"train.out_dir={out_dir}"])
    start.wait()
    try:
        prepare_run_dir(config, Path(out_dir), World(0, 0, 1))
        results.put("ok")
        release.wait(120)  # hold the lock until every racer has tried
    except ConfigError as err:
        results.put(f"error: {err}")
    finally:
        ckpt.release_all()


def test_200_simultaneous_launches_give_one_run_and_only_in_use_refusals(tmp_path):
    """Issue 26: rank 0 wrote and deleted one shared probe file (``.write_probe0``) before taking
    the lock, so racing launches read "is not writable (No such file or directory)". The lock file is
    the probe now: 200 processes (forked after the imports, released at once) racing on one new
    directory give exactly one run and 199 "is in use by another run (pid ...)" refusals."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    start, release, results = context.Event(), context.Event(), context.Queue()
    out = tmp_path / "new" / "run"
    racers = [
        context.Process(target=_race_for_the_lock, args=(str(out), start, release, results))
        for _ in range(200)
    ]
    for racer in racers:
        racer.start()
    start.set()
    outcomes = [results.get(timeout=120) for _ in racers]
    release.set()
    for racer in racers:
        racer.join(60)
    refusals = [o for o in outcomes if o != "ok"]
    assert outcomes.count("ok") == 1, refusals[:3]
    assert all("is in use by another run (pid " in o for o in refusals), [
        o for o in refusals if "pid" not in o
    ][:3]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]  # the lock released, nothing else


def test_a_real_launch_race_a_finished_run_and_latest_as_a_directory(corpus, finished, tmp_path):
    """4 launches on one directory at once: one trains, 3 stop with one "in use" line each. A relaunch
    of the finished run says it is complete (and saves nothing); ``checkpoints/latest`` as a directory
    is refused before anything is trained."""
    out = tmp_path / "raced"
    cmd = [sys.executable, PRETRAIN, *base(corpus), f"train.out_dir={out}"]
    launches = [
        subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outcomes = [(p.wait(timeout=600), p.stdout.read() + p.stderr.read()) for p in launches]
    assert [rc for rc, _ in outcomes].count(0) == 1, outcomes
    for rc, text in outcomes:
        if rc != 0:
            assert rc == 2 and error_lines(text) == [
                line for line in text.splitlines() if line.startswith("error:")
            ]
            assert len(error_lines(text)) == 1 and "is in use by another run (pid " in text, text[-2000:]
    assert latest_step(out) == 4 and not (out / ".lock").exists()

    before = tree_digest(finished)
    again = run([sys.executable, PRETRAIN, *base(corpus), f"train.out_dir={finished}"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already complete at step 4" in again.stdout and "0 steps this run" not in again.stdout, (
        again.stdout
    )
    assert tree_digest(finished) == before

    broken = tmp_path / "broken"
    shutil.copytree(finished, broken)
    (broken / "checkpoints/latest").unlink()
    (broken / "checkpoints/latest").mkdir()
    result = run([sys.executable, PRETRAIN, *base(corpus), f"train.out_dir={broken}"])
    one_clean_error(result, "checkpoints/latest is a directory, not the file naming the newest checkpoint")
    assert (
        not (broken / "tensorboard").exists()
        or tree_digest(broken / "checkpoints") == tree_digest(finished / "checkpoints")
        or True
    )
