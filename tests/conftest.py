from pathlib import Path

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


def pytest_collection_modifyitems(config, items):
    """Keep ``-m "not distributed and not slow"`` a unit subset: a test module that spawns ranks through
    ``tests.support.distributed.run_distributed`` must carry the ``distributed`` marker."""
    from tests.support.distributed import run_distributed

    unmarked = sorted(
        {
            item.nodeid.split("::")[0]
            for item in items
            if getattr(getattr(item, "module", None), "run_distributed", None) is run_distributed
            and item.get_closest_marker("distributed") is None
        }
    )
    if unmarked:
        raise pytest.UsageError(
            f"{', '.join(unmarked)}: uses run_distributed but is not marked "
            "@pytest.mark.distributed (see [tool.pytest.ini_options] markers)"
        )


@pytest.fixture(scope="module")
def corpus(request, tmp_path_factory) -> tuple[Path, Path]:
    """A 120 kB slice of the bundled corpus and a token cache beside it, one per test module (the runs of a
    module share the cache; modules do not)."""
    root = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    path = root / "corpus.txt"
    path.write_text(
        (Path(__file__).parents[1] / "growth/data/corpus/tinyshakespeare.txt").read_text()[:120_000]
    )
    return path, root / "cache"
