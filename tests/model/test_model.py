"""The stack over every block combination (torchscale-style flag grids), DeepNorm, pooling, accounting."""

import itertools
import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from growth.model import build_model
from growth.model.hf_llama import to_hf_llama
from growth.model.residual import Residual, build_residual, deepnorm_constants
from tests.conftest import tiny_model_config

TRANSFORMER = [
    ("model.layer=transformer", f"model.ffn={ffn}", f"model.attention_scale={scale}")
    for ffn, scale in itertools.product(["gelu", "swiglu"], ["sqrt", "logn"])
]
GAU = [
    (
        "model.layer=gau",
        f"model.gau_attention={kernel}",
        f"model.attention_scale={scale}",
        f"model.chunk_size={chunk}",
    )
    for (kernel, scale), chunk in itertools.product(
        [("relu2", "sqrt"), ("softmax", "sqrt"), ("softmax", "logn")], [0, 8]
    )
]
SHARED = list(
    itertools.product(
        ["model.residual=pre", "model.residual=post", "model.residual=deepnorm"],
        ["model.norm=layernorm", "model.norm=rmsnorm"],
        ["model.position=rope", "model.position=none"],
    )
)
COMBINATIONS = [(*layer, *shared) for layer in TRANSFORMER + GAU for shared in SHARED]


def exercised(model):
    """GAU's scale/offsets start at N(0, 0.02) and 0: at this tiny width attention would be ~0 and a
    leakage test would pass vacuously. Give them O(1) values so attention really mixes tokens."""
    for name, param in model.named_parameters():
        if name.endswith((".gamma", ".beta")):
            torch.nn.init.normal_(param, std=1.0)
    return model


def combo_id(flags):
    return "-".join(flag.split("=")[1] for flag in flags)


@pytest.mark.parametrize("flags", COMBINATIONS, ids=combo_id)
@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_every_combination(flags, objective):
    """Builds; forward and backward stay finite; causal leaks nothing; padding changes no real token."""
    # init_std 0.2: at width 32 the default 0.02 makes every branch so small that "does token j
    # affect token i" is decided below float noise; larger weights make the checks sensitive.
    config = tiny_model_config(*flags, f"model.objective={objective}", "model.init_std=0.2")
    model = exercised(build_model(config)).eval()
    ids = torch.randint(0, config.vocab_size, (2, 21))
    logits = model(ids)
    assert logits.shape == (2, 21, config.vocab_size)
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(logits).all()

    with torch.no_grad():
        changed = ids.clone()
        changed[:, 12:] = torch.randint(0, config.vocab_size, (2, 9))
        changed_logits = model(changed)
        assert (changed_logits[:, 12:] - logits[:, 12:]).abs().max().item() > 1e-4
        moved = (changed_logits[:, :12] - logits[:, :12]).abs().max().item()
        if objective == "clm":
            assert moved <= 1e-5, f"causal leakage {moved}"
        else:
            assert moved > 1e-4, "an MLM model must see the whole sequence"

        padded = torch.cat([ids, torch.zeros(2, 6, dtype=ids.dtype)], dim=1)
        mask = torch.cat([torch.ones(2, 21), torch.zeros(2, 6)], dim=1)
        assert (model(padded, mask)[:, :21] - logits).abs().max().item() <= 1e-5


def test_tied_embeddings_share_one_matrix_and_count_once():
    untied = build_model(tiny_model_config())
    tied = build_model(tiny_model_config("model.tie_embeddings=true"))
    assert tied.head.proj.weight is tied.embed.weight and untied.head.proj.weight is not untied.embed.weight
    embedding = untied.embed.weight.numel()
    assert untied.num_params() - tied.num_params() == embedding
    for model in (untied, tied):
        assert model.num_params() - model.num_params(embeddings=False) == embedding


def test_matches_transformers_llama():
    """litgpt-style parity: the Llama-shaped config equals HF's LlamaForCausalLM with the same weights."""
    config = tiny_model_config("model.rope_base=10000")
    model = build_model(config).eval()
    ids = torch.randint(0, config.vocab_size, (2, 30))
    reference = to_hf_llama(model)(ids).logits
    assert (model(ids) - reference).abs().max().item() <= 1e-5


def test_llama_export_refuses_other_shapes():
    with pytest.raises(ValueError, match="model.residual=deepnorm has no Llama equivalent"):
        to_hf_llama(build_model(tiny_model_config("model.residual=deepnorm")))


class TestDeepNorm:
    def test_constants_from_the_paper(self):
        alpha, beta = deepnorm_constants(12)
        assert alpha == pytest.approx(2.2134, abs=1e-4) and beta == pytest.approx(0.3195, abs=1e-4)

    def test_alpha_multiplies_the_skip_path(self):
        config = tiny_model_config("model.residual=deepnorm", "model.n_layers=12")
        sublayer = torch.nn.Linear(config.d_model, config.d_model)
        residual = build_residual(sublayer, config)
        x = torch.randn(3, config.d_model)
        alpha = deepnorm_constants(12)[0]
        expected = residual.norm(alpha * x + sublayer(x))
        assert torch.allclose(residual(x), expected, atol=1e-6)
        assert not torch.allclose(residual(x), residual.norm(x + alpha * sublayer(x)), atol=1e-3)

    @pytest.mark.parametrize("layer", ["transformer", "gau"])
    def test_beta_only_on_the_value_path(self, layer):
        """Xavier-normal std sqrt(2 / (fan_in + fan_out)) times beta on v/out/FFN (GAU: u/v/o), 1 on q/k (z)."""
        config = tiny_model_config(
            f"model.layer={layer}",
            "model.residual=deepnorm",
            "model.d_model=256",
            "model.n_heads=4",
            "model.head_dim=64",
            "model.d_ff=512",
            "model.gau_key_size=128",
            "model.gau_expansion=512",
            "model.n_layers=12",
        )
        model = build_model(config)
        n = 12 if layer == "transformer" else 6  # two GAU layers make one attention+FFN pair
        beta = deepnorm_constants(n)[1]
        assert model.layers[0].modules().__next__() is not None
        value_path, query_key = [], []
        for residual in (m for m in model.modules() if isinstance(m, Residual)):
            for name, linear in residual.sublayer.named_children():
                if isinstance(linear, torch.nn.Linear):
                    fan_out, fan_in = linear.weight.shape
                    ratio = linear.weight.std().item() / math.sqrt(2 / (fan_in + fan_out))
                    (value_path if name in residual.sublayer.value_path else query_key).append(ratio)
        assert value_path and query_key
        assert all(abs(r / beta - 1) < 0.05 for r in value_path), (value_path, beta)
        assert all(abs(r - 1) < 0.05 for r in query_key), query_key
        expected_alpha = deepnorm_constants(n)[0]
        assert all(
            float(m.alpha) == pytest.approx(expected_alpha)
            for m in model.modules()
            if isinstance(m, Residual)
        )


@pytest.mark.parametrize("pooling", ["mean", "first"])
def test_sentence_embedding_pools_real_tokens(pooling):
    config = tiny_model_config(f"model.pooling={pooling}", "model.objective=mlm")
    model = build_model(config).eval()
    ids = torch.randint(0, config.vocab_size, (2, 9))
    mask = torch.ones(2, 9)
    mask[0, 6:] = 0
    hidden = model.hidden_states(ids, mask)
    pooled = model.sentence_embedding(ids, mask)
    expected = hidden[:, 0] if pooling == "first" else torch.stack([hidden[0, :6].mean(0), hidden[1].mean(0)])
    assert torch.allclose(pooled, expected, atol=1e-6)
    unpadded = model.sentence_embedding(ids[:1, :6])
    assert torch.allclose(pooled[:1], unpadded, atol=1e-5)


@pytest.mark.parametrize(
    "flags",
    [
        ("model.ffn=swiglu",),
        ("model.ffn=gelu", "model.tie_embeddings=true"),
        ("model.layer=gau", "model.gau_attention=relu2"),
        ("model.layer=gau", "model.gau_attention=softmax"),
        ("model.layer=gau", "model.chunk_size=8"),
    ],
    ids=["swiglu", "gelu-tied", "gau-relu2", "gau-softmax", "flash"],
)
def test_flops_per_token_matches_counted_matmuls(flags):
    """6N + attention term equals torch's own FLOP count of forward+backward (matmuls only) within 3%."""
    config = tiny_model_config(*flags, "model.position=none")
    model = build_model(config)
    batch, length = 2, 32
    ids = torch.randint(0, config.vocab_size, (batch, length))
    # The math SDPA backend decomposes into matmuls the counter sees (fused CPU kernels are not counted).
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        model(ids).sum().backward()
    counted = counter.get_total_flops() / (batch * length)
    assert model.flops_per_token(length) == pytest.approx(counted, rel=0.03)
