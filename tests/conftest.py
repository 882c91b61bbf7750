import pytest
import torch

from growth.config import ModelConfig, load_config


def tiny_model_config(*overrides: str) -> ModelConfig:
    """A small, fast model config; overrides are dotted ``model.key=value`` strings."""
    base = [
        "model.vocab_size=97",
        "model.d_model=32",
        "model.n_layers=2",
        "model.n_heads=4",
        "model.head_dim=8",
        "model.d_ff=48",
        "model.gau_key_size=16",
        "model.max_seq_len=64",
        "data.seq_len=32",
    ]
    return load_config(overrides=[*base, *overrides]).model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
