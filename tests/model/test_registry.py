"""growth.registry: lookups by name, the config's accepted strings, and every registered kind building."""

import re

import pytest
import torch
from torch import nn

from growth.config import COMPONENT_KEYS, OFF_VALUES, ConfigError, choices, load_config
from growth.model import build_model
from growth.model.norm import NORMS, build_norm
from growth.objectives.contrastive_losses import contrastive_loss
from growth.registry import Registry, registry_for
from tests.conftest import tiny_model_config

DEMO = Registry("demo.kind")  # module level: a key has one registry per process


@DEMO.register("plain")
class Plain:
    pass


DEMO.register("value")(42)


def test_register_returns_the_object_and_get_finds_it():
    assert DEMO.get("plain") is Plain and DEMO.get("value") == 42
    assert DEMO.names() == ("plain", "value")  # registration order
    assert "plain" in DEMO and "other" not in DEMO
    assert registry_for("demo.kind") is DEMO


def test_unknown_name_is_a_one_line_error_naming_key_and_known_names():
    with pytest.raises(ConfigError) as err:
        DEMO.get("fancy")
    assert str(err.value) == "demo.kind must be one of plain | value, got 'fancy'"


def test_duplicates_are_refused():
    with pytest.raises(ValueError, match="'plain' is already registered"):
        DEMO.register("plain")(object())
    with pytest.raises(ValueError, match="a registry for demo.kind already exists"):
        Registry("demo.kind")
    with pytest.raises(ConfigError, match="no component registry for demo.nothing"):
        registry_for("demo.nothing")


@pytest.mark.parametrize("key", COMPONENT_KEYS)
def test_config_accepts_exactly_the_registered_names(key):
    assert choices(key) == OFF_VALUES.get(key, ()) + registry_for(key).names()
    assert registry_for(key).names(), f"nothing registered for {key}"


@pytest.mark.parametrize("key", COMPONENT_KEYS)
def test_config_refuses_an_unregistered_name_with_the_registry_list(key):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[f"{key}=no-such-kind"])
    assert str(err.value) == f"{key} must be one of {' | '.join(choices(key))}, got 'no-such-kind'"


def test_existing_message_wording_is_kept():
    with pytest.raises(
        ConfigError, match=r"^model\.residual must be one of pre \| post \| deepnorm, got 'x'$"
    ):
        load_config(overrides=["model.residual=x"])


# Settings a kind needs to be exercised at all (gau_attention only acts inside GAU layers, logn only
# with softmax), so every registered name really builds and runs.
CONTEXT = {"model.gau_attention": ("model.layer=gau",), "model.attention_scale": ("model.layer=transformer",)}
# ...and a name that needs one (Nystrom is bidirectional only).
NAME_CONTEXT = {"model.attention=nystrom": ("model.objective=mlm",)}


def model_cases():
    for key in COMPONENT_KEYS:
        if key.startswith("model."):
            for name in registry_for(key).names():
                yield pytest.param(key, name, id=f"{key}={name}")


@pytest.mark.parametrize("key, name", list(model_cases()))
def test_every_registered_model_kind_builds_and_runs(key, name):
    config = tiny_model_config(*CONTEXT.get(key, ()), *NAME_CONTEXT.get(f"{key}={name}", ()), f"{key}={name}")
    assert getattr(config, key.split(".")[1]) == name
    model = build_model(config)
    ids = torch.randint(0, config.vocab_size, (2, 9))
    mask = torch.ones(2, 9)
    mask[1, 6:] = 0
    logits = model(ids, mask)
    assert logits.shape == (2, 9, config.vocab_size) and torch.isfinite(logits).all()
    assert torch.isfinite(model.sentence_embedding(ids, mask)).all()
    assert model.flops_per_token(9) > 0


@pytest.mark.parametrize("name", registry_for("contrastive.objective").names())
def test_every_registered_contrastive_loss_runs(name):
    embeddings, scores = torch.randn(8, 4, requires_grad=True), torch.tensor([0.0, 1.5, 3.0, 5.0])
    loss = contrastive_loss(name)(embeddings, scores)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss) and embeddings.grad.abs().sum() > 0


def test_an_unknown_name_never_falls_back():
    """Past validation (a config edited in code), every lookup still refuses instead of picking a default."""
    for field, key in (
        ("layer", "model.layer"),
        ("ffn", "model.ffn"),
        ("residual", "model.residual"),
        ("norm", "model.norm"),
        ("position", "model.position"),
        ("objective", "model.objective"),
    ):
        config = tiny_model_config()
        setattr(config, field, "mystery")
        with pytest.raises(ConfigError, match=f"^{key} must be one of .*, got 'mystery'$"):
            build_model(config)
    with pytest.raises(
        ConfigError, match=re.escape("model.norm must be one of layernorm | rmsnorm, got 'batchnorm'")
    ):
        build_norm("batchnorm", 8, 1e-5)
    with pytest.raises(ConfigError, match=re.escape("must be one of simcse | infonce | cosent, got 'none'")):
        contrastive_loss("none")  # "none" switches the stage off; it is not a loss


def test_a_new_kind_is_one_registration(monkeypatch):
    """Registering a norm makes the config accept it and the model build it, with no other edit."""

    def unit_rms(dim: int, eps: float) -> nn.Module:
        return nn.RMSNorm(dim, eps=eps, elementwise_affine=False)

    monkeypatch.setitem(NORMS._entries, "unit_rms", unit_rms)  # undone after the test
    config = tiny_model_config("model.norm=unit_rms")
    model = build_model(config)
    assert isinstance(model.final_norm, nn.RMSNorm) and model.final_norm.weight is None
    assert torch.isfinite(model(torch.randint(0, config.vocab_size, (1, 5)))).all()
