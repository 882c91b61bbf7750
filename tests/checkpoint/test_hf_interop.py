"""Hugging Face interop: import Llama / Mistral / Qwen2 folders (built here at small random shapes with
save_pretrained, no hub), export every exportable block combination, the import -> grow -> export chain,
and Hugging Face tokenizers behind ``data.tokenizer``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from growth import checkpoint as ckpt
from growth.checkpoint.hf import HFConversionError, export_hf, import_hf
from growth.config import ConfigError, config_from_dict, load_config
from growth.data.hf_tokenizer import bundle_hf_tokenizer, is_hf_tokenizer, write_hf_tokenizer
from growth.data.tokenizer import Tokenizer
from growth.model import build_model
from growth.model.hf_model import greedy_decode  # importing it registers GrowthForCausalLM
from tests.conftest import tiny_model_config

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak. 123 é ü 😀"
VOCAB = 300
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=128,
    bos_token_id=1,
    eos_token_id=2,
)


def corpus_text() -> str:
    from growth.data.corpus import corpus_path

    return corpus_path("bundled:tinyshakespeare").read_text()[:20000]


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer folder (tokenizer.json + tokenizer_config.json), as open models ship."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("hf_tokenizer")
    rust = RustTokenizer(models.BPE(unk_token="<unk>"))
    rust.pre_tokenizer, rust.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    rust.train_from_iterator(
        [corpus_text()],
        trainers.BpeTrainer(
            vocab_size=VOCAB - 20,
            special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    PreTrainedTokenizerFast(
        tokenizer_object=rust, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    ).save_pretrained(folder)
    return folder


FAMILIES = {
    "llama-gqa": ("llama", dict(num_key_value_heads=2, rope_theta=500000.0)),
    "llama-mha-tied-llama3": (
        "llama",
        dict(
            tie_word_embeddings=True,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),
    ),
    "mistral-gqa": ("mistral", dict(num_key_value_heads=2, sliding_window=None)),
    "qwen2-gqa-tied": ("qwen2", dict(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6)),
    "qwen2-mqa": ("qwen2", dict(num_key_value_heads=1)),
}


def make_hf_model(kind: str, folder: Path, tokenizer: Path | None = None, **save) -> torch.nn.Module:
    """A random Llama / Mistral / Qwen2 (biases and norm gains non-trivial) saved with save_pretrained."""
    import shutil

    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    family, extra = FAMILIES[kind]
    config_class, model_class = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "mistral": (MistralConfig, MistralForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    }[family]
    torch.manual_seed(0)
    model = model_class(config_class(**COMMON, **extra)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(std=0.3)
            elif "norm" in name:
                param.normal_(1.0, 0.2)
            else:
                param.normal_(std=0.1)
    model.save_pretrained(folder, **save)
    if tokenizer is not None:
        for item in tokenizer.iterdir():
            shutil.copy(item, folder / item.name)
    return model


def project_model(folder: Path) -> torch.nn.Module:
    config = config_from_dict(yaml.safe_load((folder / ckpt.CONFIG).read_text()))
    model = build_model(config.model).eval()
    model.load_state_dict(ckpt.load_weights(folder), strict=True)
    return model


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


# -- import -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(FAMILIES))
def test_imported_logits_equal_transformers(kind, tmp_path, hf_tokenizer):
    reference = make_hf_model(kind, tmp_path / "hf", hf_tokenizer)
    report = import_hf(tmp_path / "hf", tmp_path / "ckpt", bundle_hf_tokenizer, verify=True)
    model = project_model(tmp_path / "ckpt")
    ids = torch.randint(0, VOCAB, (2, 40))
    with torch.no_grad():
        diff = relative(model(ids), reference(ids).logits)
    assert diff <= 1e-5 and report["relative_logit_diff"] <= 1e-5, diff
    m = model.config
    assert (m.qkv_bias, bool(m.n_kv_heads)) == (kind.startswith("qwen2"), "mha" not in kind)
    assert m.tie_embeddings == ("tied" in kind) and m.rope_scaling == (
        "llama3" if "llama3" in kind else "none"
    )
    # A folder tools/expand.py and train.init_from read: weights under every state_dict name, tokenizer in the config.
    assert ckpt.resolve_checkpoint(tmp_path / "ckpt") == tmp_path / "ckpt"
    assert list(ckpt.load_weights(tmp_path / "ckpt")) == list(model.state_dict())
    config = load_config(tmp_path / "ckpt" / ckpt.CONFIG)
    assert Path(config.data.tokenizer) == (tmp_path / "ckpt" / ckpt.TOKENIZER).resolve()
    assert Path(config.train.init_from) == (tmp_path / "ckpt").resolve()


@pytest.mark.parametrize("layout", ["safetensors-sharded", "bin", "bin-sharded"])
def test_import_reads_every_weight_layout(layout, tmp_path):
    save = {
        "safetensors-sharded": dict(max_shard_size="40KB"),
        "bin": dict(safe_serialization=False),
        "bin-sharded": dict(safe_serialization=False, max_shard_size="40KB"),
    }[layout]
    try:
        reference = make_hf_model("qwen2-gqa-tied", tmp_path / "hf", **save)
    except TypeError:  # a transformers that writes safetensors only
        pytest.skip("this transformers cannot write .bin checkpoints")
    names = {p.name for p in (tmp_path / "hf").iterdir()}
    if layout.startswith("bin") and not any(n.endswith(".bin") for n in names):
        # transformers 5 writes safetensors only: make the .bin layout from it, as older checkpoints have it
        from safetensors.torch import load_file

        for path in sorted((tmp_path / "hf").glob("*.safetensors")):
            torch.save(
                load_file(path),
                path.with_name(path.name.replace("model", "pytorch_model").replace(".safetensors", ".bin")),
            )
            path.unlink()
        index = tmp_path / "hf" / "model.safetensors.index.json"
        if index.is_file():
            data = json.loads(index.read_text())
            data["weight_map"] = {
                k: v.replace("model", "pytorch_model").replace(".safetensors", ".bin")
                for k, v in data["weight_map"].items()
            }
            (tmp_path / "hf" / "pytorch_model.bin.index.json").write_text(json.dumps(data))
            index.unlink()
    names = {p.name for p in (tmp_path / "hf").iterdir()}
    assert any(n.endswith(".bin" if layout.startswith("bin") else ".safetensors") for n in names)
    assert ("sharded" in layout) == any(n.endswith(".index.json") for n in names)
    report = import_hf(tmp_path / "hf", tmp_path / "ckpt", verify=False, warn=lambda line: None)
    assert report["weights"].startswith("safetensors" if layout.startswith("safe") else ".bin")
    ids = torch.randint(0, VOCAB, (2, 24))
    with torch.no_grad():
        assert relative(project_model(tmp_path / "ckpt")(ids), reference(ids).logits) <= 1e-5


REFUSALS = [
    ("mistral-gqa", {"sliding_window": 16}, "config.json: sliding_window=16"),
    ("qwen2-mqa", {"use_sliding_window": True}, "config.json: use_sliding_window=True"),
    ("llama-gqa", {"hidden_act": "gelu"}, "config.json: hidden_act='gelu'"),
    ("llama-gqa", {"attention_bias": True}, "config.json: attention_bias=True"),
    ("llama-gqa", {"mlp_bias": True}, "config.json: mlp_bias=True"),
    (
        "llama-gqa",
        {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}},
        "config.json: rope_parameters.rope_type='yarn'",
    ),
    ("llama-gqa", {"architectures": ["GPT2LMHeadModel"]}, "config.json: architectures=['GPT2LMHeadModel']"),
    ("llama-gqa", {"partial_rotary_factor": 0.5}, "config.json: partial_rotary_factor=0.5"),
    ("llama-gqa", {"head_dim": 8}, "config.json: head_dim=8"),
]


@pytest.mark.parametrize(
    "kind, change, message", REFUSALS, ids=[r[2].split(": ")[1].split("=")[0] for r in REFUSALS]
)
def test_what_cannot_be_represented_is_refused_in_one_line(kind, change, message, tmp_path):
    make_hf_model(kind, tmp_path / "hf")
    path = tmp_path / "hf" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(HFConversionError) as err:
        import_hf(tmp_path / "hf", tmp_path / "ckpt", verify=False)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert not (tmp_path / "ckpt").exists() and not list(tmp_path.glob(".ckpt*"))


def test_import_without_tokenizer_warns_and_refuses_an_existing_out(tmp_path):
    make_hf_model("llama-gqa", tmp_path / "hf")
    warnings: list[str] = []
    report = import_hf(
        tmp_path / "hf", tmp_path / "ckpt", bundle_hf_tokenizer, verify=False, warn=warnings.append
    )
    assert report["special_ids"] is None and "has no tokenizer files" in warnings[0]
    assert load_config(tmp_path / "ckpt" / ckpt.CONFIG).data.tokenizer == ""
    with pytest.raises(ConfigError, match="already exists"):
        import_hf(tmp_path / "hf", tmp_path / "ckpt", verify=False)


# -- export -------------------------------------------------------------------------------------------------
EXPORTS = {
    "llama": ((), "LlamaForCausalLM"),
    "llama-gqa-tied": (("model.n_kv_heads=2", "model.tie_embeddings=true"), "LlamaForCausalLM"),
    "llama-mqa-llama3": (
        (
            "model.n_kv_heads=1",
            "model.rope_scaling=llama3",
            "model.rope_original_max_len=16",
            "model.rope_base=500000",
        ),
        "LlamaForCausalLM",
    ),
    "qwen2-bias-gqa": (("model.qkv_bias=true", "model.n_kv_heads=2"), "Qwen2ForCausalLM"),
    "gau-relu2": (("model.layer=gau", "model.gau_attention=relu2"), "GrowthForCausalLM"),
    "gau-softmax-logn": (("model.layer=gau", "model.attention_scale=logn"), "GrowthForCausalLM"),
    "flash": (("model.layer=gau", "model.chunk_size=8"), "GrowthForCausalLM"),
    "post-layernorm-gelu": (
        ("model.residual=post", "model.norm=layernorm", "model.ffn=gelu"),
        "GrowthForCausalLM",
    ),
    "deepnorm-gqa-bias": (
        ("model.residual=deepnorm", "model.n_kv_heads=2", "model.qkv_bias=true"),
        "GrowthForCausalLM",
    ),
    "logn": (("model.attention_scale=logn", "model.tie_embeddings=true"), "GrowthForCausalLM"),
    "nope": (("model.position=none",), "GrowthForCausalLM"),
    "partial-rope": (("model.rope_dim=4",), "GrowthForCausalLM"),
    "mlm": (("model.objective=mlm",), "GrowthForCausalLM"),
    "flash-mlm-layernorm": (
        ("model.layer=gau", "model.chunk_size=8", "model.objective=mlm", "model.norm=layernorm"),
        "GrowthForCausalLM",
    ),
}


def write_checkpoint(folder: Path, model: torch.nn.Module, tokenizer: Path | None = None) -> Path:
    """A checkpoint folder as a run writes one: model.safetensors (state_dict order) + config.yaml."""
    folder.mkdir(parents=True)
    ckpt.save_safetensors_streaming(dict(model.state_dict()), folder / ckpt.WEIGHTS)
    config = load_config(overrides=["data.seq_len=32"])
    config.model = model.config
    if tokenizer is not None:
        config.data.tokenizer = str(tokenizer)
    config.save(folder / ckpt.CONFIG)
    return folder


def random_model(*flags: str) -> torch.nn.Module:
    model = build_model(tiny_model_config(*flags, "model.init_std=0.2")).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith((".gamma", ".beta")) or (name.endswith(".bias") and "norm" not in name):
                torch.nn.init.normal_(param, std=0.5)
    return model


@pytest.mark.parametrize("name", list(EXPORTS))
def test_exported_model_equals_the_project_and_generates_its_tokens(name, tmp_path):
    from transformers import AutoModelForCausalLM

    flags, architecture = EXPORTS[name]
    model = random_model(*flags)
    report = export_hf(
        write_checkpoint(tmp_path / "ckpt", model), tmp_path / "hf", verify=True, warn=lambda line: None
    )
    assert report["architecture"] == architecture and report["relative_logit_diff"] <= 1e-5
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == architecture
    ids = torch.randint(0, model.config.vocab_size, (2, 19))
    with torch.no_grad():
        assert relative(hf(ids).logits, model(ids)) <= 1e-5
    prompt = ids[:, :7]
    generated = hf.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=8,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    assert torch.equal(generated, greedy_decode(model, prompt, 8))


def test_bf16_export_halves_the_file_and_matches_its_rounded_weights(tmp_path):
    from transformers import AutoModelForCausalLM

    model = random_model("model.n_kv_heads=2")
    source = write_checkpoint(tmp_path / "ckpt", model)
    export_hf(source, tmp_path / "fp32", verify=False)
    report = export_hf(source, tmp_path / "bf16", "bf16", verify=True)
    assert report["relative_logit_diff"] <= 1e-5  # against the project's model with bf16-rounded weights
    sizes = [(tmp_path / d / "model.safetensors").stat().st_size for d in ("fp32", "bf16")]
    assert sizes[1] < 0.55 * sizes[0]
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "bf16").dtype == torch.bfloat16


# -- the whole chain ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["llama-gqa", "qwen2-gqa-tied"])
def test_import_grow_export_keeps_the_original_function(kind, tmp_path, hf_tokenizer):
    """import -> expand_checkpoint (2x width and depth, zero-sum noise) -> export -> from_pretrained gives the
    small original model's logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from growth.expand.grow_checkpoint import expand_checkpoint

    original = make_hf_model(kind, tmp_path / "hf", hf_tokenizer)
    import_hf(tmp_path / "hf", tmp_path / "small", bundle_hf_tokenizer, verify=False)
    small = load_config(tmp_path / "small" / ckpt.CONFIG).model
    target = load_config(
        tmp_path / "small" / ckpt.CONFIG,
        [
            f"model.d_model={2 * small.d_model}",
            f"model.n_heads={2 * small.n_heads}",
            f"model.d_ff={2 * small.d_ff}",
            f"model.n_layers={2 * small.n_layers}",
            f"data.cache_dir={tmp_path / 'cache'}",
        ],
    )
    target.save(tmp_path / "grow.yaml")
    report = expand_checkpoint(tmp_path / "small", tmp_path / "grow.yaml", tmp_path / "grown", noise_std=1e-3)
    assert report["params_after"] > 4 * report["params_before"] and report["probe"]["source"] != "random"
    export_hf(tmp_path / "grown", tmp_path / "export", tokenizer=write_hf_tokenizer)
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    assert type(exported).__name__ == type(original).__name__
    assert exported.config.num_key_value_heads == 2 * original.config.num_key_value_heads
    ids = torch.randint(0, VOCAB, (2, 40))
    with torch.no_grad():
        assert relative(exported(ids).logits, original(ids).logits) <= 1e-4
    tokens = AutoTokenizer.from_pretrained(tmp_path / "export")
    assert tokens(TEXT).input_ids == AutoTokenizer.from_pretrained(tmp_path / "hf")(TEXT).input_ids
    assert (tokens.bos_token_id, tokens.eos_token_id, tokens.pad_token_id) == (1, 2, 3)


# -- tokenizers -----------------------------------------------------------------------------------------------
def test_data_tokenizer_accepts_a_hugging_face_folder_bundle_or_tokenizer_json(hf_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    from growth.data.worker import load_processor

    reference = AutoTokenizer.from_pretrained(hf_tokenizer)
    bundle = tmp_path / "tokenizer.model"
    assert bundle_hf_tokenizer(hf_tokenizer, bundle) == {"bos": 1, "eos": 2, "pad": 3, "unk": 0}
    for path in (hf_tokenizer, hf_tokenizer / "tokenizer.json", bundle):
        assert is_hf_tokenizer(path)
        tokenizer = Tokenizer.load(path)
        assert tokenizer.encode(TEXT) == reference(TEXT, add_special_tokens=False).input_ids
        assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (
            reference.bos_token_id,
            reference.eos_token_id,
            reference.pad_token_id,
        )
        assert tokenizer.vocab_size == len(reference) and tokenizer.decode(tokenizer.encode(TEXT)) == TEXT
        assert tokenizer.path.is_file()  # the one file a run copies as its tokenizer.model
        processor = load_processor(str(tokenizer.path))  # what data preparation workers load
        assert processor.encode([TEXT, "x"], num_threads=1) == [tokenizer.encode(TEXT), tokenizer.encode("x")]
    assert tokenizer.processor.mask_id() == -1  # a causal LM's tokenizer has no <mask>: -1, as sentencepiece


def test_sentencepiece_tokenizer_exports_to_an_equal_hugging_face_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    from growth.data.corpus import corpus_path
    from growth.data.tokenizer import train_tokenizer

    path = train_tokenizer([corpus_path("bundled:tinyshakespeare")], tmp_path / "tok.model", 400)
    assert not is_hf_tokenizer(path)
    special = write_hf_tokenizer(path, tmp_path / "hf")
    assert special == {"bos": 2, "eos": 3, "pad": 0, "unk": 1, "mask": 4}
    ours, theirs = Tokenizer.load(path), AutoTokenizer.from_pretrained(tmp_path / "hf")
    for line in corpus_text().splitlines()[:400] + [TEXT, "  two  spaces ", ""]:
        assert theirs(line, add_special_tokens=False).input_ids == ours.encode(line), line
    assert (theirs.bos_token_id, theirs.eos_token_id, theirs.pad_token_id, theirs.mask_token_id) == (
        2,
        3,
        0,
        4,
    )


def test_export_writes_the_tokenizer_the_run_used(tmp_path, hf_tokenizer):
    from transformers import AutoTokenizer

    run = tmp_path / "run"
    folder = write_checkpoint(
        run / "checkpoints" / "step_00000001",
        random_model(f"model.vocab_size={VOCAB}"),
        tokenizer=hf_tokenizer,
    )
    (run / "checkpoints" / ckpt.LATEST).write_text(folder.name)
    (folder / ckpt.COMPLETE).write_text("")
    report = export_hf(run, tmp_path / "hf", tokenizer=write_hf_tokenizer, verify=False)
    assert report["special_ids"] == {"bos": 1, "eos": 2, "pad": 3, "unk": 0}
    assert (
        AutoTokenizer.from_pretrained(tmp_path / "hf")(TEXT).input_ids
        == AutoTokenizer.from_pretrained(hf_tokenizer)(TEXT).input_ids
    )
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 3)
