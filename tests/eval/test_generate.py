"""tools/generate.py and its logic (growth/model/sampling.py, kv_cache.py, growth/eval/generate.py): cached
decoding equals recomputing, greedy decoding equals the exported Hugging Face model's ``generate`` token for
token, a grown checkpoint writes the small model's greedy text, and bad input is one ``error:`` line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
import yaml

from growth.checkpoint.hf import export_hf
from growth.config import load_config
from growth.data.hf_tokenizer import write_hf_tokenizer
from growth.data.tokenizer import Tokenizer, sentences, train_on_sentences
from growth.eval.generate import load_for_sampling, sample_ids, sample_texts
from growth.expand.grow_checkpoint import expand_checkpoint
from growth.model.kv_cache import KVCache, supports_kv_cache
from growth.model.sampling import SamplingOptions, filtered_logits, generate
from growth.model.transformer import depth_gates, set_depth_gate
from growth.train.metrics import Metrics, format_duration
from tests.checkpoint.test_hf_interop import corpus_text, random_model, write_checkpoint

ROOT = Path(__file__).parents[2]
VOCAB = 320
GREEDY = SamplingOptions(max_new_tokens=24, temperature=0)
SAMPLED = SamplingOptions(max_new_tokens=24, temperature=0.9, top_k=50, top_p=0.95)
LAYERS = {
    "transformer": (),
    "gqa-logn-bias-postln": (
        "model.n_kv_heads=2",
        "model.attention_scale=logn",
        "model.qkv_bias=true",
        "model.residual=post",
        "model.norm=layernorm",
    ),
    "deepnorm-partial-rope": ("model.residual=deepnorm", "model.rope_dim=4", "model.ffn=gelu"),
    "gau": ("model.layer=gau",),
    "flash": ("model.layer=gau", "model.chunk_size=8"),
}


def tool_main():
    spec = importlib.util.spec_from_file_location("generate_tool", ROOT / "tools/generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    """A sentencepiece tokenizer as a run trains one (byte fallback), small enough for the tiny models."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    return train_on_sentences(sentences(corpus_text()), path, VOCAB)


def checkpoint(folder: Path, tokenizer: Path, *flags: str) -> Path:
    """A checkpoint folder of a random tiny model with logits far apart (greedy has no near-ties), whose run
    tokenizer sits beside it."""
    model = random_model(f"model.vocab_size={VOCAB}", *flags)
    write_checkpoint(folder, model, tokenizer)
    return folder


# -- decoding ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in LAYERS if n not in ("gau", "flash")])
def test_cached_decoding_computes_what_the_full_forward_computes(name):
    model = random_model(*LAYERS[name])
    ids = torch.randint(0, model.config.vocab_size, (2, 21))
    cache = KVCache(len(model.layers))
    with torch.no_grad():
        full = model(ids)
        # a prompt of 9, then one token at a time, then 4 at once (with the (new x all) mask)
        pieces = [model(ids[:, :9], cache=cache)]
        pieces += [model(ids[:, i : i + 1], cache=cache) for i in range(9, 17)]
        pieces.append(model(ids[:, 17:], cache=cache))
    assert cache.length == 21
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() <= 1e-5 * full.abs().max().item()


def test_gau_layers_refuse_a_cache():
    """GAU/FLASH units have no per-token cache: generate() recomputes for them, and a cache passed anyway is
    refused rather than silently attending to the new tokens alone."""
    model = random_model("model.layer=gau")
    with pytest.raises(ValueError, match="no KV cache"):
        model(torch.tensor([[1, 2, 3]]), cache=KVCache(len(model.layers)))


@pytest.mark.parametrize("name", list(LAYERS))
def test_kv_cache_decoding_equals_recomputing_everything(name):
    model = random_model(*LAYERS[name])
    set_depth_gate(model.layers, 1, 0.25)  # a layer being ramped in by depth growth decodes as it trains
    prompt = torch.randint(0, model.config.vocab_size, (3, 5))
    # past max_seq_len (64): the window slides; GAU/FLASH recompute either way, so a short check is enough there
    has_cache = supports_kv_cache(model.config)
    long = SamplingOptions(max_new_tokens=70 if has_cache else 8, temperature=0)
    assert torch.equal(generate(model, prompt, long), generate(model, prompt, long, use_cache=False))
    drawn = [
        generate(model, prompt, SAMPLED, torch.Generator().manual_seed(3), use_cache=cached)
        for cached in (True, False)
    ]
    assert torch.equal(drawn[0], drawn[1]) and drawn[0].shape == (3, 5 + 24)


def test_sampling_leaves_the_global_rng_alone_and_repeats_with_its_seed():
    model = random_model()
    prompt = torch.randint(0, model.config.vocab_size, (2, 4))
    state = torch.get_rng_state()
    first = generate(model, prompt, SAMPLED, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, generate(model, prompt, SAMPLED, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, generate(model, prompt, SAMPLED, torch.Generator().manual_seed(8)))


def test_top_k_and_top_p_keep_the_tokens_they_promise():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()

    def kept(**options) -> list[int]:
        out = filtered_logits(logits, SamplingOptions(temperature=1.0, **options))
        return torch.isfinite(out[0]).nonzero().flatten().tolist()

    assert kept(top_k=2) == [1, 3]
    assert kept(top_p=0.8) == [1, 3]  # 0.5 + 0.3 reaches 0.8: the nucleus stops there
    assert kept(top_p=0.81) == [1, 2, 3]
    assert kept(top_p=0.1) == [1]  # the most likely token always stays
    scaled = filtered_logits(logits, SamplingOptions(temperature=0.5))
    assert torch.allclose(scaled.softmax(-1), probs**2 / (probs**2).sum(), atol=1e-6)


# -- against transformers' generate -------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("flags", [("model.n_kv_heads=2",), ("model.layer=gau", "model.residual=post")])
def test_greedy_decoding_equals_the_exported_hf_models_generate(flags, tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM

    import growth  # noqa: F401  (GrowthForCausalLM with the auto classes)

    source = checkpoint(tmp_path / "ckpt", tokenizer, *flags)
    export_hf(source, tmp_path / "hf", tokenizer=write_hf_tokenizer, warn=lambda line: None)
    ours = load_for_sampling(source, device="cpu")
    prompt = Tokenizer.load(tokenizer).encode("ROMEO: Speak, speak.")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([prompt])
    theirs = hf.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False, eos_token_id=None
    )
    options = SamplingOptions(max_new_tokens=24, temperature=0)
    assert torch.equal(generate(ours.model, ids, options), theirs)
    # the exported folder itself, read back by generate.py, and the command line's text
    assert torch.equal(generate(load_for_sampling(tmp_path / "hf").model, ids, options), theirs)
    text = sample_texts(ours, "ROMEO: Speak, speak.", options)[0]
    assert text == Tokenizer.load(tokenizer).decode(theirs[0].tolist())


def test_the_command_line_prints_the_greedy_text(tmp_path, tokenizer, capsys):
    source = checkpoint(tmp_path / "ckpt", tokenizer)
    loaded = load_for_sampling(source)
    expected = sample_texts(loaded, "ROMEO:", GREEDY)[0]
    assert (
        tool_main()([str(source), "--prompt", "ROMEO:", "--temperature", "0", "--max-new-tokens", "24"]) == 0
    )
    assert capsys.readouterr().out == expected + "\n"
    # three samples, one seed: the same three texts again; they differ from each other
    args = [str(source), "--prompt", "ROMEO:", "--num-samples", "3", "--seed", "5", "--max-new-tokens", "16"]
    assert tool_main()(args) == 0
    first = capsys.readouterr().out
    assert tool_main()(args) == 0 and capsys.readouterr().out == first
    assert len(set(first.split("-" * 40))) == 3


# -- growth ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, target, gates",
    [
        # Pre-LN: new layers start at zero; Post-LN: the new layer is ramped in from m = 0
        ((), {"d_model": 64, "n_heads": 8, "d_ff": 96, "n_layers": 4}, {}),
        (("model.residual=post", "model.norm=layernorm"), {"n_layers": 3}, {2: 0.0}),
    ],
)
def test_a_grown_checkpoint_writes_the_small_models_greedy_text(flags, target, gates, tmp_path, tokenizer):
    source = checkpoint(tmp_path / "small", tokenizer, *flags)
    config = yaml.safe_load((source / "config.yaml").read_text())
    config["model"].update(target)
    (tmp_path / "grow.yaml").write_text(yaml.safe_dump(config))
    report = expand_checkpoint(source, tmp_path / "grow.yaml", tmp_path / "grown")
    assert report["function_preserving"]
    small, grown = load_for_sampling(source), load_for_sampling(tmp_path / "grown")
    assert grown.model.num_params() > small.model.num_params() and depth_gates(grown.model.layers) == gates
    long = SamplingOptions(max_new_tokens=40, temperature=0)
    assert sample_texts(grown, "ROMEO:", long) == sample_texts(small, "ROMEO:", long)
    # sampled text too: the same seed draws the same tokens from the same distribution
    assert sample_texts(grown, "ROMEO:", SAMPLED, 2, seed=1) == sample_texts(
        small, "ROMEO:", SAMPLED, 2, seed=1
    )


# -- EMA and bad input ----------------------------------------------------------------------------------------
def test_ema_weights_are_sampled_with_ema(tmp_path, tokenizer):
    from growth import checkpoint as ckpt

    source = checkpoint(tmp_path / "ckpt", tokenizer)
    raw = load_for_sampling(source)
    shifted = {n: p.detach() + 0.01 for n, p in raw.model.named_parameters()}
    ckpt.save_safetensors_streaming(shifted, source / "ema.safetensors", {"decay": "0.99", "updates": "10"})
    ema = load_for_sampling(source, ema=True)
    for name, param in ema.model.named_parameters():
        assert torch.equal(param, shifted[name])
    assert "EMA weights (decay 0.99)" in ema.description
    prompt = raw.tokenizer.encode("ROMEO:")
    assert sample_ids(ema, prompt, GREEDY).shape == sample_ids(raw, prompt, GREEDY).shape


@pytest.fixture(scope="module")
def ascii_tokenizer(tmp_path_factory) -> Path:
    """A tokenizer without byte fallback: characters it never saw become <unk>."""
    folder = tmp_path_factory.mktemp("ascii")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences(corpus_text())),
        model_prefix=str(folder / "tok"),
        vocab_size=200,
        character_coverage=1.0,
        byte_fallback=False,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        minloglevel=2,
    )
    return folder / "tok.model"


def bad_input_cases(
    tmp_path: Path, tokenizer: Path, ascii_tokenizer: Path
) -> dict[str, tuple[list[str], str]]:
    ok = checkpoint(tmp_path / "ok", tokenizer)
    mlm = checkpoint(tmp_path / "mlm", tokenizer, "model.objective=mlm")
    small_vocab = checkpoint(tmp_path / "small_vocab", tokenizer, "model.vocab_size=97")
    damaged = checkpoint(tmp_path / "damaged", tokenizer)
    (damaged / "model.safetensors").write_bytes((damaged / "model.safetensors").read_bytes()[:100])
    return {
        "no checkpoint": ([str(tmp_path / "nothing")], "does not exist"),
        "not a checkpoint": ([str(tmp_path)], "is not a checkpoint"),
        "unknown characters": (
            [str(ok), "--tokenizer", str(ascii_tokenizer), "--prompt", "ROMEO: 日本"],
            "--prompt: the tokenizer cannot encode '日' '本'",
        ),
        "mlm": ([str(mlm)], "model.objective=mlm is not a causal language model"),
        "no ema": ([str(ok), "--ema"], "--ema: "),
        "damaged weights": ([str(damaged)], "model.safetensors is unreadable"),
        "another tokenizer": ([str(small_vocab)], f"has {VOCAB} pieces, more than the model's 97"),
        "temperature": ([str(ok), "--temperature", "-1"], "--temperature must be >= 0"),
        "top-p": ([str(ok), "--top-p", "0"], "--top-p must be in (0, 1]"),
    }


def test_bad_input_is_one_error_line(tmp_path, tokenizer, ascii_tokenizer, capsys):
    for name, (args, message) in bad_input_cases(tmp_path, tokenizer, ascii_tokenizer).items():
        assert tool_main()([*args, "--prompt", "ROMEO:"] if "--prompt" not in args else args) == 2, name
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], (name, captured.err)
        assert captured.out == "", name


@pytest.mark.slow
def test_the_tool_reads_stdin_and_exits_2_on_bad_input(tmp_path, tokenizer):
    source = checkpoint(tmp_path / "ckpt", tokenizer)
    expected = sample_texts(load_for_sampling(source), "ROMEO:", GREEDY)[0]
    command = [sys.executable, str(ROOT / "tools/generate.py"), str(source), "--temperature", "0"]
    done = subprocess.run(
        [*command, "--max-new-tokens", "24"], input="ROMEO:", capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and done.stdout == expected + "\n", done.stderr
    failed = subprocess.run([*command, "--max-new-tokens", "0"], capture_output=True, text=True, timeout=600)
    assert failed.returncode == 2 and failed.stderr.strip() == "error: --max-new-tokens must be >= 1, got 0"


def test_an_empty_prompt_starts_a_document(tmp_path, tokenizer):
    loaded = load_for_sampling(checkpoint(tmp_path / "ckpt", tokenizer))
    eos = loaded.tokenizer.eos_id
    ids = sample_ids(loaded, [eos], GREEDY)[0].tolist()
    new = ids[1:] if eos not in ids[1:] else ids[1 : ids.index(eos, 1)]
    assert sample_texts(loaded, "", GREEDY) == [loaded.tokenizer.decode(new)]


# -- the console line ------------------------------------------------------------------------------------------
def test_the_eta_extrapolates_the_recent_step_rate(tmp_path, capsys):
    metrics = Metrics(tmp_path, enabled=True, max_steps=300, start_step=0, line_every=10)
    metrics.interactive = False  # a log file, as under a launcher
    metrics.recent.extend([9.0] * 30)  # the first steps, slow; only the last 20 count
    metrics.recent.extend([0.5] * 20)
    metrics.progress(120, 2.5, 4000.0, lr=3e-4)
    metrics.close()
    line = capsys.readouterr().out.strip()
    assert line == "step 120/300 | loss 2.5000 | lr 3.00e-04 | 4.0k tok/s | ETA 1m30s"  # 180 x 0.5 s
    assert [format_duration(s) for s in (0.4, 42, 185, 7620)] == ["0s", "42s", "3m05s", "2h07m"]


# -- the summary's grow target --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model.layer=gau"],
        ["model.n_kv_heads=2"],
        ["model.residual=deepnorm"],
        ["model.d_model=96", "model.n_heads=3"],
    ],
)
def test_the_2x_grow_target_fits_the_runs_own_shape(overrides):
    from growth.expand import plan_growth
    from growth.train.next_steps import grow_target

    config = load_config(overrides=overrides)
    target = grow_target(config, config.model)
    assert (target.model.d_model, target.model.n_layers) == (
        2 * config.model.d_model,
        2 * config.model.n_layers,
    )
    assert plan_growth(config.model, target.model).function_preserving
    assert target.data == config.data and target.train.growth == [] and target.train.out_dir == ""
