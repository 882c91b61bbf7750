"""The real command lines: deepspeed (2 ranks), two-node --no_ssh, torchrun, and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.support.distributed import free_port
from tests.support.jobs import tiny_run_overrides

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ROOT = Path(__file__).parents[1]
PRETRAIN = str(ROOT / "launch/pretrain.py")
SCALARS = {
    "train/loss",
    "train/lr",
    "train/grad_norm",
    "val/loss",
    "val/loss_se",
    "val/loss_ema",
    "perf/tokens_per_s",
    "perf/tflops",
    "train/tokens_seen",
}


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def run(cmd: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def overrides(corpus, out_dir, *extra) -> list[str]:
    return [*tiny_run_overrides(*corpus), f"train.out_dir={out_dir}", "train.ema_decay=0.9", *extra]


def scalars_written(out_dir: Path) -> set[str]:
    events = EventAccumulator(str(out_dir / "tensorboard"))
    events.Reload()
    return set(events.Tags()["scalars"])


def test_deepspeed_two_ranks_end_to_end(corpus, tmp_path):
    """... and leaves none of DeepSpeed's ~66 MB shared-memory all-reduce workspaces in /dev/shm (it never
    removes them itself: a machine that runs the suite often runs out of RAM)."""
    port = free_port()
    result = run(
        [
            bin_path("deepspeed"),
            "--num_gpus",
            "2",
            "--master_port",
            str(port),
            PRETRAIN,
            *overrides(corpus, tmp_path / "run", "train.zero_stage=2"),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*")) == []
    assert SCALARS <= scalars_written(tmp_path / "run")
    assert (tmp_path / "run/checkpoints/latest").read_text() == "step_00000004"
    assert (tmp_path / "run/config.yaml").is_file() and (tmp_path / "run/tokenizer.model").is_file()
    assert (
        f"TensorBoard: tensorboard --logdir {tmp_path / 'run' / 'tensorboard'}" in result.stdout
    )  # the summary


def test_deepspeed_two_ranks_on_a_folder_of_jsonl_shards(corpus, tmp_path):
    """data.corpus is a folder of JSONL shards: rank 0 prepares it (progress bar), both ranks train."""
    shards = jsonl_shards(tmp_path / "shards")
    result = run(
        [
            bin_path("deepspeed"),
            "--num_gpus",
            "2",
            "--master_port",
            str(free_port()),
            PRETRAIN,
            *overrides(
                corpus,
                tmp_path / "run",
                f"data.corpus={shards}",
                f"data.cache_dir={tmp_path / 'cache'}",
                "train.max_steps=2",
            ),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "docs" in result.stderr and "tokens" in result.stderr  # the preparation's progress bar
    assert '"world_size": 2' in (tmp_path / "run/checkpoints/step_00000002/run_state.json").read_text()
    (entry,) = [p for p in (tmp_path / "cache").glob("tokens-*") if (p / "meta.json").is_file()]
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["split"] == "documents" and len(meta["files"]) == 4


def test_two_nodes_with_no_ssh(corpus, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=1\n127.0.0.1 slots=1\n")
    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    nodes = [
        subprocess.Popen(
            [
                bin_path("deepspeed"),
                "--hostfile",
                str(hostfile),
                "--no_ssh",
                "--node_rank",
                str(rank),
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                port,
                PRETRAIN,
                *overrides(corpus, tmp_path / "run", "train.zero_stage=1"),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:]
    assert '"world_size": 2' in (tmp_path / "run/checkpoints/step_00000004/run_state.json").read_text()


def test_torchrun(corpus, tmp_path):
    result = run(
        [
            bin_path("torchrun"),
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            PRETRAIN,
            *overrides(corpus, tmp_path / "run"),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"world_size": 2' in (tmp_path / "run/checkpoints/step_00000004/run_state.json").read_text()


def test_accelerate_launch(corpus, tmp_path):
    """`accelerate launch --multi_gpu` runs torchrun underneath; on CPU it gives 2 gloo ranks."""
    result = run(
        [
            bin_path("accelerate"),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(free_port()),
            PRETRAIN,
            *overrides(corpus, tmp_path / "run"),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"world_size": 2' in (tmp_path / "run/checkpoints/step_00000004/run_state.json").read_text()


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def finished_run(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    result = run([sys.executable, PRETRAIN, *overrides(corpus, out, "train.max_steps=2")])
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def bad_cases(corpus: Path, tmp: Path, finished: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "empty.txt").write_text("")
    (tmp / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (tmp / "short.txt").write_text("To be, or not to be.\n")
    (tmp / "a_file").write_text("")
    return {
        "missing corpus": (
            ["data.corpus=/nonexistent/corpus.txt"],
            "data.corpus=/nonexistent/corpus.txt: file not found",
        ),
        "empty corpus": ([f"data.corpus={tmp}/empty.txt"], "the file is empty"),
        "binary corpus": ([f"data.corpus={tmp}/binary.bin"], "looks binary"),
        "short corpus": (
            [f"data.corpus={tmp}/short.txt", "data.tokenizer=" + str(finished / "tokenizer.model")],
            "fewer than one sequence",
        ),
        "missing tokenizer": (
            ["data.tokenizer=/nonexistent/tok.model"],
            "tokenizer /nonexistent/tok.model not found",
        ),
        "unknown zero stage": (["train.zero_stage=4"], "train.zero_stage must be 0, 1, 2 or 3, got 4"),
        "incompatible init_from": (
            [
                f"train.init_from={finished}",
                "model.d_model=64",
                "model.head_dim=32",
                f"train.out_dir={tmp}/grown",
            ],
            "grow it with tools/expand.py first",
        ),
        "unwritable out_dir": ([f"train.out_dir={tmp}/a_file/run"], "is not writable"),
        "bad JSONL line": (
            [f"data.corpus={jsonl_shards(tmp / 'shards', broken_line=2)}"],
            f"{tmp}/shards/00.jsonl:2: not valid JSON",
        ),
        "empty glob": ([f"data.corpus={tmp}/nothing/**/*.jsonl.gz"], "the glob matches no files"),
        "weight not positive": (
            [f"data.sources=[{{corpus: {corpus}, weight: -1}}]"],
            f"data.sources[0].weight must be > 0, got -1.0 (corpus {corpus})",
        ),
    }


def jsonl_shards(folder: Path, shards: int = 4, broken_line: int = 0) -> Path:
    """A folder of JSONL shards of tiny-Shakespeare paragraphs (one document each)."""
    folder.mkdir(parents=True, exist_ok=True)
    paragraphs = [
        p for p in (ROOT / "growth/data/corpus/tinyshakespeare.txt").read_text()[:120_000].split("\n\n") if p
    ]
    for shard in range(shards):
        lines = [json.dumps({"text": p, "shard": shard}) for p in paragraphs[shard::shards]]
        if broken_line and shard == 0:
            lines[broken_line - 1] = lines[broken_line - 1][:-3]
        (folder / f"{shard:02d}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize(
    "case",
    [
        "missing corpus",
        "empty corpus",
        "binary corpus",
        "short corpus",
        "missing tokenizer",
        "unknown zero stage",
        "incompatible init_from",
        "unwritable out_dir",
        "bad JSONL line",
        "empty glob",
        "weight not positive",
    ],
)
def test_bad_input_one_line_error(corpus, tmp_path, finished_run, case):
    before = tree_digest(finished_run)
    extra, message = bad_cases(corpus[0], tmp_path, finished_run)[case]
    # The run points at an existing run directory where it can: nothing there may change.
    target = [] if any(e.startswith("train.out_dir") for e in extra) else [f"train.out_dir={finished_run}"]
    result = run(
        [sys.executable, PRETRAIN, *overrides(corpus, finished_run, "train.max_steps=2"), *target, *extra]
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert tree_digest(finished_run) == before


def test_fresh_start_refuses_to_overwrite_checkpoints(corpus, finished_run):
    before = tree_digest(finished_run)
    result = run(
        [sys.executable, PRETRAIN, *overrides(corpus, finished_run, "train.max_steps=2", "train.resume=none")]
    )
    assert result.returncode == 2 and "already holds checkpoints" in result.stderr
    assert tree_digest(finished_run) == before
