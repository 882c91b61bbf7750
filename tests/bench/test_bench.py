import statistics

import pytest
import torch

from growth.bench import throughput
from growth.bench.throughput import compare_with_llama, interleaved, seq_len_sweep, training_step_throughput
from growth.model import accounting, build_model
from growth.model.hf_llama import llama_state_dict
from tests.conftest import tiny_model_config

BASE = [
    "model.vocab_size=97",
    "model.d_model=32",
    "model.n_layers=2",
    "model.n_heads=4",
    "model.head_dim=8",
    "model.d_ff=48",
    "model.gau_key_size=16",
]


def count_forwards(model, log: list, name: str):
    model.register_forward_pre_hook(lambda *_: log.append(name))
    return model


def assert_summary_of(timing: dict, tokens_per_step: int) -> None:
    """Every reported figure is derived from the per-step seconds the benchmark returns."""
    median = statistics.median(timing["seconds"])
    assert all(s > 0 for s in timing["seconds"])
    assert timing["ms_per_step"] == pytest.approx(1e3 * median, rel=1e-12)
    assert timing["ms_per_step_min"] == pytest.approx(1e3 * min(timing["seconds"]), rel=1e-12)
    assert timing["tokens_per_s"] == pytest.approx(tokens_per_step / median, rel=1e-12)
    assert timing["us_per_token"] == pytest.approx(1e6 * median / tokens_per_step, rel=1e-12)


def test_training_step_throughput_times_the_steps_it_reports():
    model = build_model(tiny_model_config())
    calls, before = [], {k: v.clone() for k, v in model.state_dict().items()}
    count_forwards(model, calls, "step")
    result = training_step_throughput(model, batch_size=2, seq_len=16, steps=3, warmup=2)
    assert len(result["seconds"]) == 3 and len(calls) == 2 + 3  # warmup steps run, untimed
    assert_summary_of(result, 2 * 16)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # AdamW did step


def test_interleaved_alternates_the_order_every_round():
    calls = []
    models = {name: count_forwards(build_model(tiny_model_config()), calls, name) for name in ("a", "b")}
    result = interleaved(models, batch_size=2, seq_len=8, rounds=4, warmup=1)
    assert calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]
    for timing in result.values():
        assert len(timing["seconds"]) == 4
        assert_summary_of(timing, 2 * 8)


def test_llama_twin_computes_the_same_function(monkeypatch):
    built = {}
    monkeypatch.setattr(throughput, "build_model", lambda c: built.setdefault("growth", build_model(c)))
    twin = throughput.llama_twin
    monkeypatch.setattr(throughput, "llama_twin", lambda c: built.setdefault("hf_llama", twin(c)))
    config = tiny_model_config()
    result = compare_with_llama(config, batch_size=2, seq_len=16, rounds=3)

    growth, hf = built["growth"], built["hf_llama"]
    assert result["growth"]["params"] == accounting.num_params(growth) == accounting.num_params(hf)
    assert result["hf_llama"]["params"] == result["growth"]["params"]
    # Same parameter names and shapes (strict load), and with the same weights, the same logits.
    hf.load_state_dict(llama_state_dict(growth.state_dict(), config.n_layers), strict=True)
    ids = torch.randint(config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    growth.eval(), hf.eval()
    with torch.no_grad():
        expected, got = growth(ids), hf(ids).logits
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())


def test_llama_comparison_ratios_come_from_the_rounds():
    result = compare_with_llama(tiny_model_config(), batch_size=2, seq_len=16, rounds=3)
    growth, hf = result["growth"]["seconds"], result["hf_llama"]["seconds"]
    assert len(growth) == len(hf) == 3
    assert_summary_of(result["growth"], 32) and assert_summary_of(result["hf_llama"], 32)
    assert result["round_ratios"] == pytest.approx([h / g for g, h in zip(growth, hf)], rel=1e-12)
    assert result["ratio"] == pytest.approx(statistics.median(result["round_ratios"]), rel=1e-12)
    # growth / HF tokens/s: > 1 when growth is faster, i.e. when its steps take less time.
    assert result["ratio_of_medians"] == pytest.approx(
        statistics.median(hf) / statistics.median(growth), rel=1e-12
    )


def test_seq_len_sweep_builds_the_kinds_it_reports(monkeypatch):
    configs = []
    monkeypatch.setattr(throughput, "build_model", lambda c: configs.append(c) or build_model(c))
    rows = seq_len_sweep(BASE, [16, 32], tokens_per_batch=64, chunk_size=8, rounds=2)
    assert sorted((r["kind"], r["seq_len"]) for r in rows) == sorted(
        (kind, t) for kind in ("attention", "gau", "flash") for t in (16, 32)
    )
    layers = {"attention": ("transformer", 2, 0), "gau": ("gau", 4, 0), "flash": ("gau", 4, 8)}
    assert len(configs) == len(rows)
    for row, config in zip(rows, configs):  # models are built, and rows written, in the same kind order
        assert (config.layer, config.n_layers, config.chunk_size) == layers[row["kind"]]
        assert config.max_seq_len == row["seq_len"] and row["n_layers"] == config.n_layers
        assert row["batch_size"] == 64 // row["seq_len"]
        assert row["params"] == accounting.num_params(build_model(config))
        assert len(row["seconds"]) == 2
        assert_summary_of(row, row["batch_size"] * row["seq_len"])
        # The FLOP rate uses the FLASH chunk actually built (its attention term depends on c).
        assert row["gflops_per_s"] == pytest.approx(
            accounting.flops_per_token(config, row["seq_len"]) * row["tokens_per_s"] / 1e9, rel=1e-12
        )


@pytest.mark.slow
def test_compiled_comparison_runs_all_four_in_the_same_rounds(monkeypatch):
    """growth and HF Llama, each eager and compiled (in-place copies of the same weights), interleaved;
    ``ratio_best`` compares the better mode of each side round by round."""
    compiled = []
    original = throughput.compiled_copy
    monkeypatch.setattr(
        throughput, "compiled_copy", lambda m: compiled.append(type(m).__name__) or original(m)
    )
    result = compare_with_llama(tiny_model_config(), batch_size=2, seq_len=16, rounds=3, compiled=True)
    assert compiled == ["GrowthLM", "LlamaForCausalLM"]
    names = ("growth", "hf_llama", "growth_compiled", "hf_llama_compiled")
    for name in names:
        assert len(result[name]["seconds"]) == 3
        assert_summary_of(result[name], 32)
    assert (
        result["growth_compiled"]["params"]
        == result["growth"]["params"]
        == result["hf_llama_compiled"]["params"]
    )
    s = {name: result[name]["seconds"] for name in names}
    assert result["round_ratios_compiled"] == pytest.approx(
        [h / g for g, h in zip(s["growth_compiled"], s["hf_llama_compiled"])], rel=1e-12
    )
    assert result["ratio_compiled"] == pytest.approx(
        statistics.median(result["round_ratios_compiled"]), rel=1e-12
    )
    best = [
        min(h, hc) / min(g, gc)
        for g, gc, h, hc in zip(s["growth"], s["growth_compiled"], s["hf_llama"], s["hf_llama_compiled"])
    ]
    assert result["round_ratios_best"] == pytest.approx(best, rel=1e-12)
    assert result["ratio_best"] == pytest.approx(statistics.median(best), rel=1e-12)


def test_compiled_copy_keeps_weights_and_names():
    model = build_model(tiny_model_config())
    twin = throughput.compiled_copy(model)
    assert twin is not model and twin._compiled_call_impl is not None and model._compiled_call_impl is None
    assert list(twin.state_dict()) == list(model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(twin.state_dict().values(), model.state_dict().values()))


@pytest.mark.slow
def test_sweep_ratios_to_attention_come_from_the_rounds_in_the_same_mode():
    base = [*BASE[:2], "model.n_layers=1", *BASE[3:]]
    rows = seq_len_sweep(base, [16], tokens_per_batch=32, chunk_size=8, rounds=3, compiled_seq_lens=[16])
    assert sorted((r["kind"], r["compiled"]) for r in rows) == sorted(
        (kind, mode) for kind in ("attention", "gau", "flash") for mode in (False, True)
    )
    for mode in (False, True):
        by_kind = {r["kind"]: r for r in rows if r["compiled"] == mode}
        attention = by_kind["attention"]["seconds"]
        for _kind, row in by_kind.items():
            assert row["ratio_to_attention"] == pytest.approx(
                statistics.median(t / a for t, a in zip(row["seconds"], attention)), rel=1e-12
            )
        assert by_kind["attention"]["ratio_to_attention"] == 1.0
