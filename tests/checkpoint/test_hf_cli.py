"""tools/import_hf.py and tools/export_hf.py as command lines; exported folders in fresh processes (Llama
without growth, GrowthForCausalLM after ``import growth.model.hf_model``); the "Grow an open model" recipe
runs in tests/test_readme.py with every command of docs/hf_interop.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.checkpoint.test_hf_interop import hf_tokenizer, make_hf_model, random_model, write_checkpoint  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]


def tool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def test_import_and_export_tools(tmp_path, hf_tokenizer):
    make_hf_model("qwen2-gqa-tied", tmp_path / "hf", hf_tokenizer)
    done = tool(
        str(ROOT / "tools/import_hf.py"), "--from", str(tmp_path / "hf"), "--out", str(tmp_path / "ckpt")
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout[: done.stdout.rindex("}") + 1])
    assert summary["architecture"] == "Qwen2ForCausalLM" and summary["relative_logit_diff"] <= 1e-5
    again = tool(
        str(ROOT / "tools/import_hf.py"), "--from", str(tmp_path / "hf"), "--out", str(tmp_path / "ckpt")
    )
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1].startswith("error: --out")
    exported = tool(
        str(ROOT / "tools/export_hf.py"), "--from", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out")
    )
    assert exported.returncode == 0, exported.stderr
    # Loads in a process that never imports growth.
    code = (
        "import sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer; "
        f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'out')!r}); "
        f"t = AutoTokenizer.from_pretrained({str(tmp_path / 'out')!r}); "
        "out = m.generate(**t('Speak, speak.', return_tensors='pt'), max_new_tokens=5, do_sample=False); "
        "print(type(m).__name__, out.shape[1] > 3, 'growth' in sys.modules)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split()[-3:] == ["Qwen2ForCausalLM", "True", "False"]


def test_a_refusal_is_one_error_line_and_exit_2(tmp_path):
    make_hf_model("mistral-gqa", tmp_path / "hf")
    path = tmp_path / "hf" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "sliding_window": 32}))
    done = tool(
        str(ROOT / "tools/import_hf.py"), "--from", str(tmp_path / "hf"), "--out", str(tmp_path / "ckpt")
    )
    assert done.returncode == 2 and not (tmp_path / "ckpt").exists()
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: config.json: sliding_window=32"), done.stderr


def test_the_project_class_loads_after_importing_hf_model_only(tmp_path):
    model = random_model("model.layer=gau", "model.chunk_size=8")
    write_checkpoint(tmp_path / "ckpt", model)
    exported = tool(
        str(ROOT / "tools/export_hf.py"), "--from", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out")
    )
    assert exported.returncode == 0, exported.stderr
    folder = str(tmp_path / "out")
    without = subprocess.run(
        [
            sys.executable,
            "-c",
            "from transformers import AutoModelForCausalLM; "
            f"AutoModelForCausalLM.from_pretrained({folder!r})",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert without.returncode != 0 and "growth" in without.stderr
    with_growth = subprocess.run(
        [
            sys.executable,
            "-c",
            "import growth.model.hf_model, torch; from transformers import AutoModelForCausalLM; "
            f"m = AutoModelForCausalLM.from_pretrained({folder!r}); "
            "print(type(m).__name__, m.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4, "
            "do_sample=False).shape[1])",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert with_growth.returncode == 0, with_growth.stderr
    assert with_growth.stdout.split()[-2:] == ["GrowthForCausalLM", "7"]


def test_import_growth_does_not_import_transformers():
    """Only the HF code imports transformers: data workers and ranks stay light."""
    code = (
        "import sys, growth.config, growth.model, growth.data.tokenizer; "
        "print(any(m.startswith('transformers') for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def test_import_growth_has_no_side_effects():
    """``import growth`` installs no import hook and registers nothing with transformers (issue 24.5): a model
    type ``growth`` is unknown to ``AutoConfig`` until ``growth.model.hf_model`` is imported."""
    code = (
        "import sys; hooks = list(sys.meta_path); import growth, growth.config, growth.model; "
        "print(sys.meta_path == hooks); "
        "from transformers import AutoConfig; from transformers.models.auto.configuration_auto import "
        "CONFIG_MAPPING; print('growth' in CONFIG_MAPPING); "
        "import growth.model.hf_model; "
        "print('growth' in CONFIG_MAPPING, type(AutoConfig.for_model('growth')).__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", "True", "GrowthHFConfig"]
