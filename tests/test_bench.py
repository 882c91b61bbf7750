from growth.bench.throughput import compare_with_llama, seq_len_sweep, training_step_throughput
from growth.model import build_model
from tests.conftest import tiny_model_config


def test_training_step_throughput_reports_median_figures():
    result = training_step_throughput(build_model(tiny_model_config()), batch_size=2, seq_len=16, steps=3, warmup=1)
    assert len(result["seconds"]) == 3
    assert result["tokens_per_s"] > 0 and abs(result["ms_per_step"] * result["tokens_per_s"] - 32e3) < 1e-6 * 32e3


def test_llama_twin_has_the_same_shape():
    result = compare_with_llama(tiny_model_config(), batch_size=2, seq_len=16, rounds=2)
    assert result["growth"]["params"] == result["hf_llama"]["params"]
    assert result["ratio"] > 0 and len(result["round_ratios"]) == 2


def test_seq_len_sweep_doubles_gau_layers_and_keeps_tokens_per_step():
    base = ["model.vocab_size=97", "model.d_model=32", "model.n_layers=2", "model.n_heads=4", "model.head_dim=8",
            "model.d_ff=48", "model.gau_key_size=16"]
    rows = seq_len_sweep(base, [16, 32], tokens_per_batch=64, chunk_size=8, rounds=1)
    assert {(r["kind"], r["n_layers"]) for r in rows} == {("attention", 2), ("gau", 4), ("flash", 4)}
    assert all(r["batch_size"] * r["seq_len"] == 64 for r in rows)
