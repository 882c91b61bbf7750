"""Every command in the README and in ``docs/*.md`` works as written, top to bottom, after the documented
set-up.

Each page is one test: its ```bash blocks are read in order and run in a scratch directory of its own
(``launch/``, ``tools/``, ``configs/`` and ``.venv`` linked in, so ``runs/`` lands there), with the
virtualenv's ``bin`` first on PATH (what ``. .venv/bin/activate`` does); the pages share only the token cache,
which is keyed by content. Each command is run as written, except:

- training commands get small-run overrides appended (a few steps; later keys win), so the README
  can show real step counts, and their launcher a free rendezvous port (other jobs on the machine may hold
  the default 29500);
- benchmarks (``tools/bench_*.py``) run ``--help``: they take minutes to an hour and have their
  own smoke tests;
- ``tensorboard --logdir`` starts a server: ``tensorboard --version`` checks it is installed;
- set-up commands (``make``, ``.``/``source``) are what ``.ci/run`` itself does before the tests.

```python blocks are run as scripts in the same directory (the pages keep them small). Output, and commands
that cannot run here (e.g. multi-node), go in ```text or ```console fences, which are not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.distributed import free_port

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
SMALL_RUN = [
    "train.max_steps=2",
    "train.warmup_steps=1",
    "train.eval_interval=1",
    "train.save_interval=1",
    "train.eval_batches=1",
    "train.log_interval=1",
]
# configs/grow_schedule.yaml grows at step 1228; a small run grows in two stages, after steps 1 and 2.
SMALL_GROWTH = [
    "train.max_steps=3",
    "train.growth=[{at_step: 1, model: {d_model: 256, n_heads: 8, d_ff: 768}}, "
    "{at_step: 2, model: {n_layers: 8}}]",
]
SETUP = ("make", ".", "source")
# each launcher's rendezvous-port flag and where its own flags start (``accelerate launch ...``)
PORT_FLAGS = {"deepspeed": ("--master_port", 1), "torchrun": ("--master_port", 1)}
PORT_FLAGS["accelerate"] = ("--main_process_port", 2)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def bash_commands(text: str) -> list[list[str]]:
    commands = []
    for block in blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                commands.append(tokens)
    return commands


def as_tested(tokens: list[str]) -> list[str] | None:
    """The command line the test runs for a README command (None: a set-up step)."""
    if tokens[0] in SETUP:
        return None
    if tokens[0] == "tensorboard":
        return ["tensorboard", "--version"]
    if any(t.startswith("tools/bench_") for t in tokens):
        return [*tokens[:2], "--help"]
    if "launch/pretrain.py" in tokens and not {"--help", "--print-config"} & set(tokens):
        grows = any(t.endswith("grow_schedule.yaml") for t in tokens)
        return on_a_free_port([*tokens, *SMALL_RUN, *(SMALL_GROWTH if grows else [])])
    return tokens


def on_a_free_port(tokens: list[str]) -> list[str]:
    """The launch with a free rendezvous port, unless the command chose one."""
    flag, at = PORT_FLAGS.get(tokens[0], (None, 0))
    if flag is None or flag in tokens:
        return tokens
    return [*tokens[:at], flag, str(free_port()), *tokens[at:]]


@pytest.fixture(scope="module")
def token_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def workdir(tmp_path_factory, token_cache) -> tuple[Path, dict[str, str]]:
    work = tmp_path_factory.mktemp("page")
    for name in ("launch", "tools", "configs"):
        (work / name).symlink_to(ROOT / name)
    (work / ".venv").symlink_to(BIN.parent)  # the README's paths into the virtualenv (its Python sources)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(BIN.parent),
        "GROWTH_CACHE": str(token_cache),
    }
    return work, env


def run(command: list[str], work: Path, env: dict[str, str], page: str) -> None:
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{page} command failed: {shlex.join(command)}\n{result.stderr[-3000:]}"


def runnable_commands(text: str) -> list[list[str]]:
    """The commands of a page the test runs, as written (set-up steps left out)."""
    return [tokens for tokens in bash_commands(text) if as_tested(tokens) is not None]


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_command_of_the_page_works_as_written(page, workdir):
    work, env = workdir
    name = str(page.relative_to(ROOT))
    text = page.read_text()
    for tokens in runnable_commands(text):
        run(as_tested(tokens), work, env, name)
    for index, script in enumerate(blocks(text, "python")):
        path = work / f"page_block{index}.py"
        path.write_text(script)
        run([sys.executable, str(path)], work, env, name)


def test_the_reading_finds_the_commands():
    """The README shows the path from a small model to an exported grown one; the pages together hold every
    command the README held before it moved into docs/ (50)."""
    readme = [shlex.join(tokens) for tokens in runnable_commands((ROOT / "README.md").read_text())]
    assert len(readme) >= 8
    for tool in ("launch/pretrain.py", "tools/expand.py", "tensorboard", "tools/export_hf.py"):
        assert any(tool in command for command in readme), tool
    assert sum(len(runnable_commands(page.read_text())) for page in PAGES) >= 50


def test_the_reader_finds_continued_lines_and_drops_comments():
    text = "```bash\ndeepspeed launch/pretrain.py a=1 \\\n    b=2   # two keys\n# only a comment\n```\n"
    assert bash_commands(text) == [["deepspeed", "launch/pretrain.py", "a=1", "b=2"]]
    assert as_tested(["make", "run"]) is None
    launched = as_tested(["accelerate", "launch", "launch/pretrain.py"])
    assert (
        launched[:3] == ["accelerate", "launch", "--main_process_port"]
        and launched[4] == "launch/pretrain.py"
    )
    assert as_tested(["deepspeed", "launch/pretrain.py"])[1] == "--master_port"
    assert as_tested(["python", "tools/bench_growth.py", "--quick"]) == [
        "python",
        "tools/bench_growth.py",
        "--help",
    ]
