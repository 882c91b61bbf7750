"""``tools/bench_gpu.py``: the prepared GPU run, checked on CPU. The plan is the ~125M Llama shape in
bf16 under ZeRO-2 with train.compile; MFU uses the device's dense bf16 peak; ``--dry-run`` runs the
same code on a tiny shape on CPU end to end (a subprocess: DeepSpeed, the trainer's step, JSON + PNG)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from growth.bench import gpu
from growth.model import accounting, build_model
from growth.model.hf_llama import llama_state_dict
from growth.train.metrics import mfu, peak_tflops

ROOT = Path(__file__).parents[2]


def load_tool():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "tools/bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_plan_is_a_125m_llama_in_bf16_under_zero2_compiled():
    plan = gpu.GPUPlan()
    config = gpu.model_config(plan)
    with torch.device("meta"):
        params = accounting.num_params(build_model(config))
    assert 115e6 <= params <= 135e6
    assert (config.layer, config.ffn, config.norm, config.residual, config.position) == (
        "transformer",
        "swiglu",
        "rmsnorm",
        "pre",
        "rope",
    )
    assert (
        plan.seq_lens == [1024, 2048]
        and max(plan.sweep_seq_lens) == 16384
        and min(plan.sweep_seq_lens) == 2048
    )
    assert plan.budget_s < 300
    for seq_len in plan.seq_lens:
        train = gpu.train_config(plan, seq_len)
        assert (train.zero_stage, train.precision, train.compile, train.grad_accum) == (2, "bf16", True, 1)
        assert train.micro_batch_size * seq_len == plan.tokens_per_step


def test_mfu_is_the_measured_flop_rate_over_the_dense_bf16_peak():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0 and peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0  # not the SXM part's peak
    assert peak_tflops("NVIDIA A10G") is None and peak_tflops("NVIDIA A10") == 125.0  # a whole-word match
    assert peak_tflops("NVIDIA GH200 480GB") == 989.0 and peak_tflops("Tesla T4") is None
    # 4.945e14 FLOPs in one second on one H100: 50%; the same work on 2 GPUs: 25%.
    assert mfu(4.945e14, 1.0, 989.0) == pytest.approx(0.5)
    assert mfu(4.945e14, 1.0, 989.0, n_gpus=2) == pytest.approx(0.25)
    assert mfu(1e12, 1.0, None) is None


def test_logits_only_is_the_hf_model_with_growth_accounting():
    plan = gpu.dry_run_plan(compile=False)
    config = gpu.model_config(plan)
    torch.manual_seed(0)
    growth = build_model(config).eval()
    wrapped = gpu.LogitsOnly(gpu.llama_twin(config), config).eval()
    wrapped.model.load_state_dict(llama_state_dict(growth.state_dict(), config.n_layers), strict=True)
    ids = torch.randint(5, config.vocab_size, (2, 16))
    with torch.no_grad():
        expected = growth(ids)
        assert (wrapped(ids) - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())
    assert wrapped.flops_per_token(64) == growth.flops_per_token(64)


def test_without_a_gpu_the_tool_asks_for_one_or_a_dry_run(monkeypatch, capsys):
    tool = load_tool()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["bench_gpu.py"])
    assert tool.main() == 2
    assert capsys.readouterr().err.strip() == (
        "error: no CUDA device; run on a GPU, or use --dry-run (a tiny shape on CPU)"
    )


@pytest.mark.distributed
@pytest.mark.slow
def test_dry_run_writes_every_figure(tmp_path):
    """The prepared script end to end on CPU: both models through build_engine and the trainer's step at
    both lengths, the layer-kind sweep, JSON and PNG; no MFU on CPU (no peak)."""
    result = subprocess.run(
        [sys.executable, "tools/bench_gpu.py", "--dry-run", "--no-compile", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert (tmp_path / "bench_gpu.png").stat().st_size > 0
    plan = record["plan"]
    assert (plan["shape"], plan["precision"], plan["zero_stage"], plan["device"]) == (
        "tiny",
        "fp32",
        2,
        "cpu",
    )
    params = record["trainer"]["params"]
    assert params["growth"] == params["hf_llama"] > 0
    for name in ("growth", "hf_llama"):
        for seq_len in map(str, plan["seq_lens"]):
            row = record["trainer"]["results"][name][seq_len]
            assert len(row["seconds"]) == plan["steps"] and row["tokens_per_s"] > 0 and row["mfu"] is None
            assert row["tokens_per_step"] == row["micro_batch_size"] * int(seq_len)
            assert all(torch.isfinite(torch.tensor(row["losses"])))
    assert set(record["trainer"]["ratio"]) == set(map(str, plan["seq_lens"]))
    kinds = {(r["kind"], r["seq_len"]) for r in record["sweep"]}
    assert kinds == {(k, t) for k in ("attention", "gau", "flash") for t in plan["sweep_seq_lens"]}
    assert "growth / HF Llama tokens/s" in result.stdout
