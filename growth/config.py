"""Run configuration, assembled: the four sections, YAML, dotted ``key=value`` overrides, validation.

Each section lives next to what it configures (``growth/model/config.py``, ``growth/data/config.py``,
``growth/train/config.py``, ``growth/objectives/config.py``) with its own checks; this module joins them
into :class:`Config`, reads YAML and overrides (``growth/schema.py`` checks each value's type), runs the
checks that span sections, and re-exports every section name so ``from growth.config import X`` works.

The dataclass defaults *are* the embedded default run (a tiny model on the bundled corpus), so
``load_config()`` with no path needs no file. Every component is chosen by a string so a config
serializes to YAML and a checkpoint records exactly what was built; the names a component key
accepts are the ones registered for it (``growth/registry.py``, see ``choices``). Each model field
also says whether growth, resume and init_from may change it (``model_field_role``).

Errors are :class:`ConfigError` with a one-line message that names the key, e.g.
``model.n_heads * model.head_dim must equal model.d_model (4 * 8 != 48)``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from growth.data.config import DEFAULT_CORPUS, DataConfig, SourceConfig, validate_data
from growth.errors import ConfigError
from growth.model.config import COMPONENT_KEYS as MODEL_COMPONENT_KEYS
from growth.model.config import (
    ROLES,
    ModelConfig,
    fields_with_role,
    model_config_from_dict,
    model_differences,
    model_field_role,
    resolve_model,
    validate_model,
)
from growth.objectives.config import OBJECTIVES_OFF, ContrastiveConfig, validate_contrastive, validate_rdrop
from growth.objectives.config import OPTIONS as CONTRASTIVE_OPTIONS
from growth.registry import registry_for
from growth.schema import INT_LIMIT, parse_scalar, set_key
from growth.train.config import OPTIONS as TRAIN_OPTIONS
from growth.train.config import GrowthStage, TrainConfig, validate_sampling, validate_train

__all__ = [
    "COMPONENT_KEYS",
    "DEFAULT_CORPUS",
    "INT_LIMIT",
    "OFF_VALUES",
    "OPTIONS",
    "ROLES",
    "Config",
    "ConfigError",
    "ContrastiveConfig",
    "DataConfig",
    "GrowthStage",
    "ModelConfig",
    "SourceConfig",
    "TrainConfig",
    "choices",
    "config_from_dict",
    "fields_with_role",
    "load_config",
    "model_config_from_dict",
    "model_differences",
    "model_field_role",
    "resolve",
    "run_folders",
    "validate",
]


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        """Write the config as YAML atomically (temporary name, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_yaml())
        tmp.replace(path)


# Keys that pick a component. Their accepted names are the names registered for the key where the
# components are defined (growth/registry.py), so adding a kind never means editing a list here.
COMPONENT_KEYS = (*MODEL_COMPONENT_KEYS, "contrastive.objective")
# contrastive.objective=none turns the contrastive stage off: a value of the key, not a registered loss.
OFF_VALUES: dict[str, tuple[str, ...]] = {"contrastive.objective": OBJECTIVES_OFF}
# Plain options: they select a code path, not a component.
OPTIONS: dict[str, tuple[str, ...]] = {**TRAIN_OPTIONS, **CONTRASTIVE_OPTIONS}


def choices(dotted: str) -> tuple[str, ...]:
    """The strings a choice key accepts (e.g. ``choices("model.norm")`` -> ``("layernorm", "rmsnorm")``)."""
    if dotted in OPTIONS:
        return OPTIONS[dotted]
    if dotted not in COMPONENT_KEYS:
        raise ConfigError(f"{dotted} is not a choice key")
    return OFF_VALUES.get(dotted, ()) + registry_for(dotted).names()


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Load YAML at ``path`` (the embedded default when None), apply ``key=value`` overrides, validate."""
    config = Config()
    if path is not None:
        _apply_mapping(config, _read_yaml(Path(path)), str(path))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. model.d_model=256)")
        _set(config, key.strip(), parse_scalar(value.strip()), source="command line", from_text=True)
    resolve(config)
    validate(config)
    return config


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a validated Config from ``to_dict()`` output (e.g. one stored in a checkpoint)."""
    config = Config()
    _apply_mapping(config, data, "dict")
    resolve(config)
    validate(config)
    return config


def resolve(config: Config) -> None:
    """Fill values that default to a function of others, so the saved config says what was built."""
    resolve_model(config.model)
    data, train = config.data, config.train
    if not data.tokenizer and config.contrastive.objective != "none" and train.init_from:
        # Fine-tuning a pretrained run uses its tokenizer (a run dir keeps tokenizer.model at its top).
        data.tokenizer = next(
            (
                str(p / "tokenizer.model")
                for p in run_folders(Path(train.init_from))
                if (p / "tokenizer.model").is_file()
            ),
            "",
        )


def run_folders(path: Path) -> tuple[Path, ...]:
    """A checkpoint folder, its ``checkpoints/`` folder and its run directory."""
    return path, path.parent, path.parent.parent


def validate(config: Config) -> None:
    """Reject impossible values and combinations with a one-line message naming the key."""
    m, t, c = config.model, config.train, config.contrastive
    validate_model(m)
    validate_data(config.data, m.max_seq_len)
    validate_train(t)
    validate_contrastive(c, m.max_seq_len, grows=bool(t.growth))
    validate_rdrop(t.rdrop_alpha, m.dropout, c.objective)
    validate_sampling(t, m.objective, c.objective)


class _Yaml12Floats(yaml.SafeLoader):
    """Reads ``1e-3`` as a float, as YAML 1.2 does (PyYAML's 1.1 rules want a dot: a string)."""


_Yaml12Floats.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789.")
)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config")
    try:
        data = yaml.load(path.read_text(), Loader=_Yaml12Floats)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"config file {path} is not valid YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping with sections model/data/train")
    return data


def _apply_mapping(config: Config, data: dict[str, Any], source: str) -> None:
    for section, values in data.items():
        _section(config, str(section))
        if not isinstance(values, dict):
            raise ConfigError(f"{section} in {source} must be a mapping of keys, got {values!r}")
        for key, value in values.items():
            _set(config, f"{section}.{key}", value, source=source, from_text=False)


def _section(config: Config, name: str) -> Any:
    sections = [f.name for f in dataclasses.fields(config)]
    if name not in sections:
        raise ConfigError(f"unknown section {name!r}; known sections are {', '.join(sections)}")
    return getattr(config, name)


def _set(config: Config, dotted: str, value: Any, source: str, from_text: bool) -> None:
    parts = dotted.split(".")
    if len(parts) != 2:
        raise ConfigError(f"key {dotted!r} must be section.key (e.g. model.d_model)")
    set_key(_section(config, parts[0]), parts[0], parts[1], value, source, from_text)
