"""The benchmarks' one harness (``growth/bench/harness.py``) and figure module (``growth/bench/plotting.py``):
processes from the repository root with this tree first, a real run's scalars read back, the run cache by
config digest, atomic JSON, figures drawn only through plotting."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import yaml

from growth.bench import harness, plotting

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "model.d_model=32",
    "model.n_layers=1",
    "model.n_heads=2",
    "model.head_dim=16",
    "model.d_ff=48",
    "train.micro_batch_size=2",
    "train.eval_batches=1",
    "train.eval_interval=2",
    "train.log_interval=1",
    "train.save_interval=4",
    "train.max_steps=4",
    "train.warmup_steps=1",
]


def test_root_is_the_repository_and_subprocesses_see_this_tree_first():
    assert harness.ROOT == ROOT and (harness.ROOT / "launch/pretrain.py").is_file()
    env = harness.subprocess_env(threads=3)
    assert env["PYTHONPATH"].split(":")[0] == str(ROOT) and env["OMP_NUM_THREADS"] == "3"
    code = "import json, os, growth; print('noise'); print(json.dumps({'growth': growth.__file__, 'cwd': os.getcwd()}))"
    seen = harness.run_python(["-c", code])
    assert seen == {"growth": str(ROOT / "growth/__init__.py"), "cwd": str(ROOT)}


def test_a_failed_process_raises_with_its_stderr_and_without_the_code_it_ran():
    code = "import sys; sys.stderr.write('broke on purpose\\n'); sys.exit(3)" + " " * 300
    with pytest.raises(RuntimeError, match="broke on purpose") as failure:
        harness.run_python(["-c", code])
    assert code not in str(failure.value) and str(failure.value).startswith(f"{sys.executable} -c import sys")


def test_the_trainer_runs_alone_or_under_the_deepspeed_launcher():
    assert harness.pretrain_command() == [sys.executable, str(ROOT / "launch/pretrain.py")]
    launcher = harness.pretrain_command(2, 29601)
    assert Path(launcher[0]).name == "deepspeed" and launcher[1:] == [
        "--num_gpus",
        "2",
        "--master_port",
        "29601",
        str(ROOT / "launch/pretrain.py"),
    ]


def test_json_is_written_atomically_with_nan_as_null_unless_the_cache_asks(tmp_path):
    harness.write_json(tmp_path / "a/r.json", {"x": math.nan, "y": [1.0, math.inf], "p": tmp_path})
    assert json.loads((tmp_path / "a/r.json").read_text()) == {
        "x": None,
        "y": [1.0, None],
        "p": str(tmp_path),
    }
    harness.write_json(tmp_path / "c.json", {"x": math.nan}, indent=None, nan_as_null=False)
    assert math.isnan(json.loads((tmp_path / "c.json").read_text())["x"])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "c.json", "r.json"]


def test_a_missing_run_has_no_scalars_and_no_curve(tmp_path):
    assert harness.scalars(tmp_path, "val/loss") == [] and harness.curve(tmp_path) == []


def test_figures_are_drawn_and_saved_atomically(tmp_path):
    fig, axes = plotting.figure(3, rows=2)
    assert len(axes) == 6
    axes[0].plot([1, 2], [3, 4])
    plotting.save_figure(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob("*.tmp"))


def test_without_matplotlib_a_figure_names_the_bench_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(plotting.MissingPlotting, match=r"pip install 'growth\[bench\]'"):
        plotting.figure(1)


def test_no_benchmark_imports_matplotlib_or_tensorboard_itself():
    sources = [*(ROOT / "growth/bench").rglob("*.py"), *(ROOT / "tools").glob("bench_*.py")]
    for path in sources:
        text = path.read_text()
        if path.name not in ("plotting.py", "harness.py"):
            assert "import matplotlib" not in text and "EventAccumulator" not in text, path
        assert "parents[2]" not in text or path.name == "harness.py", path


@pytest.mark.slow
def test_a_real_run_is_read_back_and_a_cached_one_is_not_trained_again(tmp_path, monkeypatch):
    """Four steps of the trainer's real path: its curve from TensorBoard, then the run cache."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    seconds = harness.train(tmp_path / "fresh", TINY)
    points = harness.curve(tmp_path / "fresh")
    assert seconds > 0 and [p["step"] for p in points] == [2, 4]
    assert points[1]["flops"] == pytest.approx(2 * points[0]["flops"], rel=1e-9)  # the same model every step
    assert 0 <= points[0]["seconds"] <= points[1]["seconds"] <= seconds
    assert [step for step, _ in harness.scalars(tmp_path / "fresh", "train/loss")] == [1, 2, 3, 4]

    config = yaml.safe_load((tmp_path / "fresh/config.yaml").read_text())  # the whole config, as it ran
    first = harness.train_cached(tmp_path / "cache", "tiny", config, threads=1, log=lambda line: None)
    assert first.steps == 4 and [s for s, _ in first.val] == [2, 4] and first.flops_seen > 0
    assert Path(first.folder).name == f"tiny-{harness.digest(config)}"

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(harness, "run_trainer", no_training)
    again = harness.train_cached(tmp_path / "cache", "tiny", config, threads=1, log=lambda line: None)
    assert again == first and again.final_loss == first.val[-1][1]
