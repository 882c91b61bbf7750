"""``train.save_steps``: checkpoints at chosen steps besides ``save_interval`` (the decay branches of the growth
benchmark start on them), and the one-line refusal of a step outside the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from growth.config import ConfigError, load_config
from tests.support.jobs import tiny_run_overrides

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("steps", ["[0]", "[7]", "[3, 9]"])
def test_a_save_step_outside_the_run_is_one_line_naming_the_key(steps):
    with pytest.raises(ConfigError, match=r"train.save_steps must lie in \[1, train.max_steps=6\]"):
        load_config(None, ["train.max_steps=6", f"train.save_steps={steps}"])


@pytest.mark.slow
@pytest.mark.distributed
def test_checkpoints_land_on_the_save_steps_the_interval_and_the_end(corpus, tmp_path):
    out = tmp_path / "run"
    overrides = [
        *tiny_run_overrides(*corpus),
        "train.max_steps=6",
        "train.save_interval=4",
        "train.save_steps=[1, 5]",
        f"train.out_dir={out}",
    ]
    done = subprocess.run(
        [sys.executable, str(ROOT / "launch/pretrain.py"), *overrides],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": str(Path(sys.executable).parent)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    saved = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
    assert saved == [f"step_{s:08d}" for s in (1, 4, 5, 6)]
