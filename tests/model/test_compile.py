"""``train.compile``: the blocks trace into one graph (no graph breaks: ``torch._dynamo.explain``), a
compiled model computes what the eager one does, and compiling keeps the parameter names (checkpoints,
EMA and growth read parameters by name). The 2-rank DeepSpeed runs are in ``test_compile_distributed.py``."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo as dynamo

from growth.config import ConfigError, TrainConfig, load_config
from growth.model import build_model
from growth.train import engine as engine_module
from tests.conftest import tiny_model_config

# Every block the config can select, each with and without a padding mask (a different graph).
BLOCKS = {
    "attention": [],
    "attention, log-n": ["model.attention_scale=logn", "model.logn_min_keys=4"],
    "attention, partial rope, post-LN, layernorm": [
        "model.rope_dim=4",
        "model.residual=post",
        "model.norm=layernorm",
    ],
    "attention, no position, deepnorm, gelu": [
        "model.position=none",
        "model.residual=deepnorm",
        "model.ffn=gelu",
    ],
    "attention, mlm": ["model.objective=mlm"],
    "gau relu2": ["model.layer=gau", "model.gau_attention=relu2"],
    "gau softmax, log-n": ["model.layer=gau", "model.gau_attention=softmax", "model.attention_scale=logn"],
    "flash relu2": ["model.layer=gau", "model.gau_attention=relu2", "model.chunk_size=8"],
    "flash softmax, log-n": [
        "model.layer=gau",
        "model.gau_attention=softmax",
        "model.attention_scale=logn",
        "model.chunk_size=8",
    ],
    "flash softmax, mlm": [
        "model.layer=gau",
        "model.gau_attention=softmax",
        "model.chunk_size=8",
        "model.objective=mlm",
    ],
}


def padded_batch(vocab: int, batch: int = 2, length: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and a mask whose second row ends in padding (length 20: FLASH pads it to 24)."""
    ids = torch.randint(vocab, (batch, length), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, -5:] = 0
    return ids, mask


@pytest.mark.parametrize("block", BLOCKS)
def test_blocks_compile_without_graph_breaks(block):
    model = build_model(tiny_model_config(*BLOCKS[block])).train()
    ids, mask = padded_batch(model.config.vocab_size)
    for attention_mask in (None, mask):
        dynamo.reset()
        explained = dynamo.explain(model)(ids, attention_mask)
        reasons = [
            f"{b.reason} at {b.user_stack[-1] if b.user_stack else '?'}" for b in explained.break_reasons
        ]
        assert explained.graph_break_count == 0, reasons
        assert explained.graph_count == 1
    dynamo.reset()


def test_sequence_longer_than_the_rope_cache_compiles_in_one_graph():
    """The RoPE cache grows inside the forward (T > model.max_seq_len) without breaking the graph."""
    model = build_model(tiny_model_config())
    ids = torch.randint(model.config.vocab_size, (1, 2 * model.config.max_seq_len))
    dynamo.reset()
    explained = dynamo.explain(model)(ids)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    dynamo.reset()


def test_compiled_model_equals_eager_and_keeps_its_parameter_names():
    """Inductor (the backend train.compile uses) on the most involved block: FLASH, softmax kernel,
    log-n, RoPE, a padding mask. Logits and gradients equal eager's (fp32, 1e-5); ``model.compile()``
    compiles in place, so the state-dict names are the model's own and load into an uncompiled model."""
    config = tiny_model_config(
        "model.layer=gau", "model.gau_attention=softmax", "model.attention_scale=logn", "model.chunk_size=8"
    )
    eager = build_model(config).train()
    compiled = copy.deepcopy(eager)
    names = list(eager.state_dict())
    dynamo.reset()
    compiled.compile()
    ids, mask = padded_batch(config.vocab_size)
    expected, got = eager(ids, mask), compiled(ids, mask)
    scale = max(1.0, expected.abs().max().item())
    assert (got - expected).abs().max().item() <= 1e-5 * scale
    expected.square().mean().backward()
    got.square().mean().backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        assert (q.grad - p.grad).abs().max().item() <= 1e-5 * max(1e-3, p.grad.abs().max().item()), name
    assert compiled._compiled_call_impl is not None  # compiled in place, not wrapped
    assert list(compiled.state_dict()) == names and not any("_orig_mod" in n for n in names)
    fresh = build_model(config).train()
    fresh.load_state_dict(compiled.state_dict(), strict=True)
    assert torch.equal(fresh(ids, mask), eager(ids, mask))
    dynamo.reset()


def test_train_compile_is_a_checked_boolean():
    assert TrainConfig().compile is False
    assert load_config(overrides=["train.compile=true"]).train.compile is True
    with pytest.raises(ConfigError, match="train.compile expects"):
        load_config(overrides=["train.compile=fast"])


def test_compile_without_a_cpu_compiler_is_refused_by_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(engine_module.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"train.compile=true on CPU needs a C\+\+ compiler"):
        engine_module.check_compile_available()
    monkeypatch.undo()
    engine_module.check_compile_available()  # this machine has one


def test_adamw_is_fused_on_cuda_only(monkeypatch):
    train = TrainConfig()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "fused" not in engine_module.adamw_settings(train)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert engine_module.adamw_settings(train)["fused"] is True
    assert engine_module.adamw_settings(train)["betas"] == (0.9, 0.95)
