"""Run configuration: dataclasses, YAML, dotted ``key=value`` overrides, validation.

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
import difflib
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from growth.errors import ConfigError

if TYPE_CHECKING:
    from growth.registry import Registry


# What "the same model" means (see ``model_field_role``). Every ModelConfig field has one role:
#   fixed     must be equal across growth, resume and init_from: it changes the function's form
#   growable  may change only through a growth operator (growth/expand/width.py), which keeps the function
#   free      may differ on resume or init_from: it changes training, not the parameters' function
ROLES = ("fixed", "growable", "free")


def _fixed(default: Any) -> Any:
    return field(default=default, metadata={"growth": "fixed"})


def _growable(default: Any) -> Any:
    return field(default=default, metadata={"growth": "growable"})


def _free(default: Any) -> Any:
    return field(default=default, metadata={"growth": "free"})


@dataclass
class ModelConfig:
    vocab_size: int = _fixed(1024)
    d_model: int = _growable(128)
    n_layers: int = _growable(4)
    max_seq_len: int = _fixed(256)
    layer: str = _fixed("transformer")  # transformer (MHA + FFN) | gau (one gated attention unit per layer)
    # transformer layers
    n_heads: int = _growable(4)
    # key/value heads: grouped-query attention (1: multi-query); 0 means n_heads. Growth keeps the query group
    # size n_heads / n_kv_heads, so the plan derives the grown value (growth/expand/width.py).
    n_kv_heads: int = _growable(0)
    qkv_bias: bool = _fixed(False)  # biases on the q/k/v projections (Qwen2); no other linear layer has one
    # heads grow in number, or in size (growth/expand/blocks.py: q rescaled so q.k/sqrt(d_h) is kept, the new
    # dimensions start empty and are not rotated: rope_dim keeps the old width)
    head_dim: int = _growable(32)
    d_ff: int = _growable(384)
    ffn: str = _fixed("swiglu")  # gelu | swiglu
    # softmax (exact) | performer (FAVOR+, growth/model/performer.py) | nystrom (growth/model/nystrom.py)
    attention: str = _fixed("softmax")
    performer_features: int = _fixed(0)  # m random features per head; 0 means floor(head_dim * ln head_dim)
    performer_redraw_interval: int = _free(0)  # redraw the features every N optimizer steps; 0 = fixed
    nystrom_landmarks: int = _fixed(64)  # landmarks (segment means) per sequence
    nystrom_conv_kernel: int = _fixed(0)  # depthwise conv residual on V over this many tokens; 0 = off
    # GAU layers (Hua et al. 2022, "Transformer Quality in Linear Time")
    gau_expansion: int = _growable(0)  # e; 0 means 2 * d_model (the paper's default)
    gau_key_size: int = _growable(128)  # s
    gau_attention: str = _fixed("softmax")  # relu2 (the paper) | softmax (GAU-alpha)
    chunk_size: int = _fixed(0)  # 0: dense GAU; c > 0: FLASH mixed-chunk attention with chunks of c tokens
    # positions and attention scale
    position: str = _fixed("rope")  # rope | none
    rope_base: float = _fixed(10000.0)  # theta (Hugging Face rope_theta)
    # RoPE frequency scaling: none | llama3 (Llama 3.1/3.2: low frequencies / factor, a smooth ramp between)
    rope_scaling: str = _fixed("none")
    rope_scaling_factor: float = _fixed(8.0)  # llama3: factor
    rope_low_freq_factor: float = _fixed(1.0)  # llama3: low_freq_factor
    rope_high_freq_factor: float = _fixed(4.0)  # llama3: high_freq_factor
    rope_original_max_len: int = _fixed(8192)  # llama3: original_max_position_embeddings
    # rotated dimensions per head (partial rotary); 0 means all of them. Growable: growing the GAU key
    # size pins it to the old key size (new dimensions are not rotated); otherwise growth keeps it.
    rope_dim: int = _growable(0)
    attention_scale: str = _fixed("sqrt")  # sqrt | logn (entropy-invariant, log(n)/log(logn_base) / sqrt(d))
    logn_base: int = _fixed(512)
    logn_min_keys: int = _fixed(1)  # clamp n >= this in the log-n scale (bert4keras uses 16)
    # residual stream
    residual: str = _fixed("pre")  # pre | post | deepnorm
    norm: str = _fixed("rmsnorm")  # layernorm | rmsnorm
    norm_eps: float = _growable(1e-5)  # growable: a non-multiple width growth rescales it (width.py)
    dropout: float = _free(0.0)
    tie_embeddings: bool = _fixed(False)
    objective: str = _fixed("clm")  # clm (causal) | mlm (bidirectional)
    pooling: str = _fixed("mean")  # sentence embedding: mean over real tokens | first token
    init_std: float = _free(0.02)


def model_field_role(name: str) -> str:
    """``fixed`` | ``growable`` | ``free`` for a ModelConfig field (see ``ROLES``)."""
    for f in dataclasses.fields(ModelConfig):
        if f.name == name:
            return f.metadata["growth"]
    raise ConfigError(f"model.{name} is not a model field")


def fields_with_role(role: str) -> tuple[str, ...]:
    """ModelConfig field names with ``role``, in declaration order."""
    _check_roles((role,))
    return tuple(f.name for f in dataclasses.fields(ModelConfig) if f.metadata["growth"] == role)


def model_differences(
    old: ModelConfig, new: ModelConfig, roles: str | Iterable[str]
) -> list[tuple[str, Any, Any]]:
    """``(name, old value, new value)`` for each field with one of ``roles`` that differs."""
    wanted = (roles,) if isinstance(roles, str) else tuple(roles)
    _check_roles(wanted)
    return [
        (f.name, getattr(old, f.name), getattr(new, f.name))
        for f in dataclasses.fields(ModelConfig)
        if f.metadata["growth"] in wanted and getattr(old, f.name) != getattr(new, f.name)
    ]


def _check_roles(roles: tuple[str, ...]) -> None:
    for role in roles:
        if role not in ROLES:
            raise ValueError(f"unknown model field role {role!r}; roles are {' | '.join(ROLES)}")


DEFAULT_CORPUS = "bundled:tinyshakespeare"


@dataclass
class SourceConfig:
    """One corpus of a mixture (``data.sources``), drawn in proportion to ``weight``."""

    corpus: str | list[str]  # as data.corpus
    weight: float = 1.0
    text_field: str = ""  # empty: data.text_field


@dataclass
class DataConfig:
    # A file, a directory (recursive), a glob ('corpus/**/*.jsonl.gz'), bundled:<name>, or a list of these.
    # Formats by suffix: .jsonl/.jsonl.gz/.jsonl.zst and .parquet (text in text_field); any other file is
    # UTF-8 text, one document per file. growth/data/sources.py.
    corpus: str | list[str] = DEFAULT_CORPUS
    sources: list[SourceConfig] = field(
        default_factory=list
    )  # a mixture [{corpus, weight}]; replaces data.corpus
    val_corpus: str | list[str] = ""  # validation documents; empty: hold out val_fraction of the documents
    text_field: str = "text"  # the JSONL key / Parquet column holding the text
    # a sentencepiece .model, or a Hugging Face tokenizer (a folder with tokenizer.json, the file itself, or an
    # imported checkpoint's tokenizer.model: growth/data/hf_tokenizer.py); empty: train one on the corpus (cached)
    tokenizer: str = ""
    input_sentence_size: int = 1_000_000  # lines sampled (seeded) to train that tokenizer
    cache_dir: str = ""  # tokenizers and packed token files; empty: $GROWTH_CACHE or ~/.cache/growth
    workers: int = 0  # processes that tokenize a corpus the cache lacks; 0: all cores
    seed: int = 0  # the validation split and the tokenizer's sample
    seq_len: int = 128
    val_fraction: float = 0.05
    mlm_probability: float = 0.15


@dataclass
class GrowthStage:
    """One growth inside a run (``train.growth``; docs/growth_operators.md "Grow inside one run")."""

    # grow after this optimizer step of the whole run; auto: when the small model's loss falls more slowly per
    # FLOP than auto_law predicts for the grown model (growth/train/auto_growth.py; the last stage only)
    at_step: int | str
    model: dict[str, Any] = field(default_factory=dict)  # the growable fields that change, e.g. {n_layers: 8}
    noise_std: float = 1e-3  # zero-sum symmetry-breaking noise (exact at any value), as tools/expand.py
    optimizer: str = "grown"  # grown (Adam moments mapped with the weights) | reset
    rewarmup_steps: int = 0  # ramp the LR from 0 to the scheduled value over this many steps after growing
    seed: int = 0  # seeds the noise and new layers (tools/expand.py --seed)
    # The operators (growth/expand/options.py; tools/expand.py flags of the same names):
    depth_operator: str = (
        "auto"  # auto (zero for pre, ramp for post/deepnorm) | ramp | zero | stack (not exact)
    )
    ramp_steps: int = (
        100  # ramp: a new layer's gate m rises linearly from 0 to 1 over this many optimizer steps
    )
    noise: str = "absolute"  # absolute | relative (noise_std x each weight's RMS)
    split: str = (
        "equal"  # equal | lemon (unequal splits alpha, (1 - alpha)/(c - 1), ...: exact for any alpha)
    )
    split_alpha: float = 0.7  # lemon: the first copy's share
    width_operator: str = "tiled"  # tiled [h; h; 0_r] | interleaved (Su: repeat in place, 1/sqrt(k); no RoPE)
    # at_step: auto (growth/train/auto_growth.py): L(N, D) as [E, A, alpha, B, beta] (tools/bench_growth.py fits
    # it), the evaluations the small model's slope is fitted on, and the step to grow at the latest (0: none)
    auto_law: list[float] = field(default_factory=list)
    auto_window: int = 3
    auto_latest: int = 0


@dataclass
class TrainConfig:
    name: str = "default"
    out_dir: str = ""  # empty: runs/<name>
    max_steps: int = 300
    micro_batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    save_interval: int = 100
    save_steps: list[int] = field(
        default_factory=list
    )  # also save after these steps (e.g. where decay branches start)
    keep_checkpoints: int = (
        0  # keep the newest N complete checkpoints (older ones deleted once a newer is complete); 0: all
    )
    eval_interval: int = 50
    eval_batches: int = 8
    log_interval: int = 10
    resume: str = "auto"  # auto (continue from the latest checkpoint in out_dir) | none
    init_from: str = ""  # start from another checkpoint's weights (after growth)
    zero_stage: int = 0
    deepspeed_config: str = ""  # a DeepSpeed JSON; overrides zero_stage when set
    precision: str = "fp32"  # fp32 | bf16
    seed: int = 1234
    ema_decay: float = 0.0  # 0 disables EMA
    ema_warmup: bool = False  # decay_t = min(ema_decay, (1 + t) / (10 + t))
    max_bad_steps: int = 5  # stop after this many consecutive non-finite (skipped) steps
    lr_schedule: str = (
        "cosine"  # cosine (warmup + cosine to min_lr_ratio) | wsd (warmup-stable-decay) | constant
    )
    decay_fraction: float = 0.2  # wsd: the final share of max_steps that decays to min_lr_ratio
    growth: list[GrowthStage] = field(default_factory=list)  # growth stages applied in order inside the run
    continue_schedule: bool = (
        False  # with init_from: continue the source's step count and LR schedule position
    )
    compile: bool = (
        False  # torch.compile the model under the DeepSpeed engine (engine.compile(); growth/train/engine.py)
    )
    # R-Drop (Liang et al. 2021): each example runs twice under independent dropout; alpha weighs the
    # symmetric KL between the two passes (growth/objectives/rdrop.py; docs/rdrop.md). 0: off.
    rdrop_alpha: float = 0.0
    # Sampled text in TensorBoard's text tab and the log (growth/train/callbacks/samples.py): every N steps and
    # right before and after each growth stage; 0: off. Each prompt is continued on rank 0 with its own seed.
    sample_interval: int = 0
    sample_prompts: list[str] = field(default_factory=lambda: ["ROMEO:"])  # "" starts a new document


@dataclass
class ContrastiveConfig:
    """Contrastive fine-tuning (docs/contrastive.md); objective=none is token pretraining."""

    objective: str = "none"  # none | simcse (unsupervised) | infonce (sentence pairs) | cosent (scored pairs)
    data: str = (
        "bundled:sts-train"  # training file in `format`; bundled:<name> for data shipped in the package
    )
    format: str = "sts"  # sts (STS-B: genre, file, year, id, score, s1, s2, ...) | pairs (s1<TAB>s2) | text (a sentence a line)
    eval_data: str = "bundled:sts-dev"  # STS-B layout, for val/spearman; empty: none
    temperature: float = 0.05  # tau of SimCSE and InfoNCE
    # SimCSE's form: symmetric (Su's: all 2N views against each other; the default, so earlier results hold)
    # | paper (Gao et al. 2021 Eq. 1: N first views against the N second views, one direction)
    simcse_variant: str = "symmetric"
    cosent_scale: float = 20.0  # lambda of CoSENT
    positive_min_score: float = 4.0  # infonce on scored pairs: only pairs scored >= this are positives
    max_len: int = 64  # tokens per sentence (longer ones are truncated)
    batch_size: int = (
        0  # global examples per optimizer step; 0: train.micro_batch_size * train.grad_accum * world
    )


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
COMPONENT_KEYS = (
    "model.layer",
    "model.attention",
    "model.ffn",
    "model.gau_attention",
    "model.position",
    "model.rope_scaling",
    "model.attention_scale",
    "model.residual",
    "model.norm",
    "model.objective",
    "model.pooling",
    "contrastive.objective",
)
# contrastive.objective=none turns the contrastive stage off: a value of the key, not a registered loss.
OFF_VALUES: dict[str, tuple[str, ...]] = {"contrastive.objective": ("none",)}
# Plain options: they select a code path, not a component.
OPTIONS: dict[str, tuple[str, ...]] = {
    "train.resume": ("auto", "none"),
    "train.precision": ("fp32", "bf16"),
    "train.lr_schedule": ("cosine", "wsd", "constant"),
    "contrastive.format": ("sts", "pairs", "text"),
    "contrastive.simcse_variant": (
        "symmetric",
        "paper",
    ),  # growth/objectives/contrastive_losses.py SIMCSE_VARIANTS
}


def choices(dotted: str) -> tuple[str, ...]:
    """The strings a choice key accepts (e.g. ``choices("model.norm")`` -> ``("layernorm", "rmsnorm")``)."""
    if dotted in OPTIONS:
        return OPTIONS[dotted]
    if dotted not in COMPONENT_KEYS:
        raise ConfigError(f"{dotted} is not a choice key")
    return OFF_VALUES.get(dotted, ()) + _registry(dotted).names()


def _registry(dotted: str) -> Registry:
    # Imported here, not at the top: the component modules import this one. Importing them runs
    # their registrations.
    import growth.model  # noqa: F401
    import growth.objectives.contrastive_losses  # noqa: F401
    from growth.registry import registry_for

    return registry_for(dotted)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Load YAML at ``path`` (the embedded default when None), apply ``key=value`` overrides, validate."""
    config = Config()
    if path is not None:
        _apply_mapping(config, _read_yaml(Path(path)), str(path))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. model.d_model=256)")
        _set(config, key.strip(), _parse_scalar(value.strip()), source="command line", from_text=True)
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


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """A validated ModelConfig alone (e.g. the ``model`` section stored with a checkpoint)."""
    config = Config()
    _apply_mapping(config, {"model": data}, "dict")
    resolve(config)
    _validate_choices(config, "model")
    _validate_model(config.model)
    return config.model


def resolve(config: Config) -> None:
    """Fill values that default to a function of others, so the saved config says what was built."""
    if config.model.gau_expansion == 0:
        config.model.gau_expansion = 2 * config.model.d_model
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


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(path.read_text())
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
        if not isinstance(values, dict):
            _unknown_check(config, str(section))
            raise ConfigError(f"{section} in {source} must be a mapping of keys, got {values!r}")
        for key, value in values.items():
            _set(config, f"{section}.{key}", value, source=source, from_text=False)


def _unknown_check(config: Config, dotted: str) -> None:
    known = _known_keys(config)
    sections = [f.name for f in dataclasses.fields(config)]
    name = dotted.split(".")[0]
    if name not in sections:
        raise ConfigError(f"unknown section {name!r}; known sections are {', '.join(sections)}")
    if "." in dotted and dotted not in known:
        hint = difflib.get_close_matches(dotted, known, n=1)
        suggestion = f"; did you mean {hint[0]}?" if hint else ""
        raise ConfigError(f"unknown key {dotted!r}{suggestion}")


def _known_keys(config: Config) -> list[str]:
    return [
        f"{section.name}.{f.name}"
        for section in dataclasses.fields(config)
        for f in dataclasses.fields(getattr(config, section.name))
    ]


def _set(config: Config, dotted: str, value: Any, source: str, from_text: bool) -> None:
    parts = dotted.split(".")
    if len(parts) != 2:
        raise ConfigError(f"key {dotted!r} must be section.key (e.g. model.d_model)")
    _unknown_check(config, dotted)
    section_obj = getattr(config, parts[0])
    expected = typing.get_type_hints(type(section_obj))[parts[1]]
    setattr(section_obj, parts[1], _coerce(dotted, value, expected, source, from_text))


def _parse_scalar(text: str) -> Any:
    # YAML's scalar rules (1e-3 -> float needs a dot or sign in YAML 1.1, so try numbers first).
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        return text


INT_LIMIT = 2**63 - 1  # int64: torch and numpy hold counters and seeds in it


def _coerce(key: str, value: Any, expected: type, source: str, from_text: bool) -> Any:
    def fail() -> ConfigError:
        return ConfigError(f"{key} expects {_type_name(expected)}, got {value!r} (from {source})")

    if expected is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if expected is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer() and from_text)
        ):
            raise fail()
        if not -INT_LIMIT <= value <= INT_LIMIT:  # what every step counter and seed is stored in
            raise ConfigError(
                f"{key}={value!r} is out of range: integer keys hold at most {INT_LIMIT:,} (2**63 - 1, "
                f"int64) (from {source})"
            )
        return int(value)
    if expected is float:
        number = value
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                number = float(value)
            except ValueError:
                raise fail() from None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise fail()
        if not math.isfinite(number):
            raise ConfigError(f"{key} must be a finite number, got {value!r} (from {source})")
        return float(number)
    if expected is str:
        if isinstance(value, str):
            return value
        if from_text and value is not None and not isinstance(value, (dict, list)):
            return str(value)
        raise fail()
    return _coerce_structured(key, value, expected, source, from_text)


def _coerce_structured(key: str, value: Any, expected: Any, source: str, from_text: bool) -> Any:
    """Lists, mappings, unions and nested dataclasses (e.g. ``train.growth``: a list of stages);
    an element's errors name it as ``key[i].field``."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if expected is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _coerce(key, value, option, source, from_text)
            except ConfigError:
                continue
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"{key} expects {names}, got {value!r} (from {source})")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} expects a list, got {value!r} (from {source})")
        return [_coerce(f"{key}[{i}]", item, args[0], source, from_text) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} expects a mapping, got {value!r} (from {source})")
        return {str(k): _coerce(f"{key}.{k}", v, args[1], source, from_text) for k, v in value.items()}
    if dataclasses.is_dataclass(expected):
        return _coerce_dataclass(key, value, expected, source, from_text)
    raise TypeError(f"unsupported config field type {expected} for {key}")


def _coerce_dataclass(key: str, value: Any, expected: type, source: str, from_text: bool) -> Any:
    known = [f.name for f in dataclasses.fields(expected)]
    if isinstance(value, expected):
        return value
    if not isinstance(value, dict):
        raise ConfigError(
            f"{key} must be a mapping with keys {', '.join(known)}, got {value!r} (from {source})"
        )
    for name in value:
        if name not in known:
            hint = difflib.get_close_matches(str(name), known, n=1)
            raise ConfigError(
                f"unknown key {key}.{name}"
                + (f"; did you mean {key}.{hint[0]}?" if hint else f"; known keys are {', '.join(known)}")
            )
    hints = typing.get_type_hints(expected)
    required = [
        f.name
        for f in dataclasses.fields(expected)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in value]
    if missing:
        raise ConfigError(f"{key}.{missing[0]} is required (from {source})")
    return expected(
        **{name: _coerce(f"{key}.{name}", v, hints[name], source, from_text) for name, v in value.items()}
    )


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind)


def validate(config: Config) -> None:
    """Reject impossible values and combinations with a one-line message naming the key."""
    for section in ("model", "train"):
        _validate_choices(config, section)
    _validate_model(config.model)
    _validate_data(config.data, config.model)
    _validate_train(config.train)
    _validate_contrastive(config)
    _validate_rdrop(config)
    _validate_sampling(config)


def _validate_choices(config: Config, section: str) -> None:
    for dotted in (*COMPONENT_KEYS, *OPTIONS):
        if dotted.startswith(section + "."):
            value = getattr(getattr(config, section), dotted.split(".")[1])
            allowed = choices(dotted)
            if value not in allowed:
                raise ConfigError(f"{dotted} must be one of {' | '.join(allowed)}, got {value!r}")


def _positive(section: str, obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{section}.{name} must be > 0, got {getattr(obj, name)}")


def _validate_model(m: ModelConfig) -> None:
    _positive("model", m, "vocab_size", "d_model", "n_layers", "max_seq_len", "rope_base", "init_std")
    _positive("model", m, "norm_eps", "logn_min_keys")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {m.dropout}")
    if m.logn_base < 2:
        raise ConfigError(f"model.logn_base must be >= 2, got {m.logn_base}")
    if m.chunk_size < 0:
        raise ConfigError(f"model.chunk_size must be >= 0 (0 = dense), got {m.chunk_size}")
    rotated, rotated_key = _validate_layer(m)
    if m.rope_scaling == "llama3":
        _positive("model", m, "rope_scaling_factor", "rope_low_freq_factor", "rope_original_max_len")
        if m.rope_high_freq_factor <= m.rope_low_freq_factor:
            raise ConfigError(
                f"model.rope_high_freq_factor ({m.rope_high_freq_factor}) must be > "
                f"model.rope_low_freq_factor ({m.rope_low_freq_factor})"
            )
    if m.position == "rope":
        rope_dim = m.rope_dim or rotated
        if rope_dim % 2 or rope_dim > rotated or rope_dim < 0:
            raise ConfigError(f"model.rope_dim must be even and <= {rotated_key} ({rotated}), got {rope_dim}")


def _validate_layer(m: ModelConfig) -> tuple[int, str]:
    """The layer kind checks the fields it owns (growth/model/layer_kind.py); returns the per-head width
    RoPE rotates, and its key."""
    kind = _registry("model.layer").get(m.layer)
    kind.validate(m)
    return getattr(m, kind.rope_width_field), f"model.{kind.rope_width_field}"


def _validate_data(d: DataConfig, m: ModelConfig) -> None:
    _positive("data", d, "seq_len")
    if d.seq_len > m.max_seq_len:
        raise ConfigError(f"data.seq_len ({d.seq_len}) must be <= model.max_seq_len ({m.max_seq_len})")
    if not 0.0 < d.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
    if not 0.0 < d.mlm_probability < 1.0:
        raise ConfigError(f"data.mlm_probability must be in (0, 1), got {d.mlm_probability}")
    _positive("data", d, "input_sentence_size")
    if d.workers < 0:
        raise ConfigError(f"data.workers must be >= 0 (0: all cores), got {d.workers}")
    if not d.text_field:
        raise ConfigError("data.text_field must name the JSONL key / Parquet column of the text, got ''")
    for key, spec in [
        ("data.corpus", d.corpus),
        ("data.val_corpus", d.val_corpus or ["-"]),
        *((f"data.sources[{i}].corpus", s.corpus) for i, s in enumerate(d.sources)),
    ]:
        items = [spec] if isinstance(spec, str) else spec
        if not items or not all(isinstance(item, str) and item.strip() for item in items):
            raise ConfigError(
                f"{key} must be a file, a directory, a glob or a non-empty list of these, got {spec!r}"
            )
    for i, source in enumerate(d.sources):
        if not (source.weight > 0 and math.isfinite(source.weight)):
            raise ConfigError(
                f"data.sources[{i}].weight must be > 0, got {source.weight} (corpus {source.corpus})"
            )
    if d.sources and d.corpus != DEFAULT_CORPUS:
        raise ConfigError(
            "data.corpus and data.sources are both set; list every corpus in data.sources "
            f"(data.corpus={d.corpus})"
        )


def _validate_train(t: TrainConfig) -> None:
    _positive("train", t, "max_steps", "micro_batch_size", "grad_accum", "lr")
    _positive("train", t, "save_interval", "eval_interval", "eval_batches", "log_interval", "max_bad_steps")
    if any(not 0 < step <= t.max_steps for step in t.save_steps):
        raise ConfigError(
            f"train.save_steps must lie in [1, train.max_steps={t.max_steps}], got {t.save_steps}"
        )
    if t.keep_checkpoints < 0:
        raise ConfigError(
            f"train.keep_checkpoints must be >= 0 (0 keeps every checkpoint), got {t.keep_checkpoints}"
        )
    if t.warmup_steps < 0:
        raise ConfigError(f"train.warmup_steps must be >= 0, got {t.warmup_steps}")
    if t.zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"train.zero_stage must be 0, 1, 2 or 3, got {t.zero_stage}")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1) (0 disables EMA), got {t.ema_decay}")
    if not 0.0 <= t.min_lr_ratio <= 1.0:
        raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
    if not 0.0 < t.decay_fraction <= 1.0:
        raise ConfigError(f"train.decay_fraction must be in (0, 1], got {t.decay_fraction}")
    previous = 0
    for index, stage in enumerate(t.growth):
        key = f"train.growth[{index}]"
        if stage.at_step == "auto":
            _validate_auto_stage(key, stage, index == len(t.growth) - 1, t.max_steps)
        _validate_stage(key, stage, previous, t.max_steps)
        previous = stage.at_step


def _validate_auto_stage(key: str, stage: GrowthStage, last: bool, max_steps: int) -> None:
    if not last:
        raise ConfigError(
            f"{key}.at_step=auto: only the last stage may choose its own step (the others follow it)"
        )
    if len(stage.auto_law) != 5 or not all(math.isfinite(v) and v >= 0 for v in stage.auto_law):
        raise ConfigError(
            f"{key}.auto_law must be L(N, D)'s [E, A, alpha, B, beta], 5 numbers >= 0 "
            f"(tools/bench_growth.py prints them), got {stage.auto_law}"
        )
    if stage.auto_law[2] <= 0 or stage.auto_law[4] <= 0:
        raise ConfigError(f"{key}.auto_law: alpha and beta must be > 0, got {stage.auto_law}")
    if stage.auto_window < 2:
        raise ConfigError(
            f"{key}.auto_window must be >= 2 evaluations (a slope needs two), got {stage.auto_window}"
        )
    if not 0 <= stage.auto_latest < max_steps:
        raise ConfigError(
            f"{key}.auto_latest must be in [0, train.max_steps={max_steps}) (0: no deadline), got {stage.auto_latest}"
        )


def _validate_stage(key: str, stage: GrowthStage, previous: int | str, max_steps: int) -> None:
    """What can be checked without the growth operators (the builder checks each stage against them)."""
    if isinstance(stage.at_step, str) and stage.at_step != "auto":
        raise ConfigError(f"{key}.at_step must be a step number or auto, got {stage.at_step!r}")
    if stage.at_step != "auto" and not previous < stage.at_step < max_steps:
        raise ConfigError(
            f"{key}.at_step={stage.at_step} must be after the previous stage ({previous}) and before "
            f"train.max_steps ({max_steps})"
        )
    if not stage.model:
        raise ConfigError(f"{key}.model is empty; give the growable fields that change, e.g. {{n_layers: 8}}")
    growable, hints = fields_with_role("growable"), typing.get_type_hints(ModelConfig)
    for name, value in stage.model.items():
        if name not in growable:
            what = "not a model field" if name not in hints else f"{model_field_role(name)} across growth"
            raise ConfigError(f"{key}.model.{name} is {what}; growable fields are {', '.join(growable)}")
        stage.model[name] = _coerce(f"{key}.model.{name}", value, hints[name], key, from_text=False)
    if not stage.noise_std >= 0:
        raise ConfigError(f"{key}.noise_std must be >= 0 (0: no symmetry breaking), got {stage.noise_std}")
    if stage.optimizer not in ("grown", "reset"):
        raise ConfigError(f"{key}.optimizer must be one of grown | reset, got {stage.optimizer!r}")
    if stage.rewarmup_steps < 0:
        raise ConfigError(f"{key}.rewarmup_steps must be >= 0, got {stage.rewarmup_steps}")
    for name, allowed in STAGE_CHOICES.items():
        if getattr(stage, name) not in allowed:
            raise ConfigError(
                f"{key}.{name} must be one of {' | '.join(allowed)}, got {getattr(stage, name)!r}"
            )
    if stage.ramp_steps < 1:
        raise ConfigError(
            f"{key}.ramp_steps must be >= 1 (the gate rises over that many steps), got {stage.ramp_steps}"
        )


def _validate_sampling(config: Config) -> None:
    t = config.train
    if t.sample_interval < 0:
        raise ConfigError(f"train.sample_interval must be >= 0 (0: no samples), got {t.sample_interval}")
    if not t.sample_interval:
        return
    if config.model.objective != "clm" or config.contrastive.objective != "none":
        what = (
            f"model.objective={config.model.objective}"
            if config.model.objective != "clm"
            else f"contrastive.objective={config.contrastive.objective}"
        )
        raise ConfigError(
            f"train.sample_interval={t.sample_interval}: {what} trains no causal language model to sample "
            "from; set train.sample_interval=0"
        )
    if not t.sample_prompts:
        raise ConfigError(
            'train.sample_prompts is empty; give at least one prompt ("" starts a new document)'
        )


# A growth stage's operator choices (growth/expand/options.py holds the same tuples; a test keeps them equal).
STAGE_CHOICES = {
    "depth_operator": ("auto", "ramp", "zero", "stack"),
    "noise": ("absolute", "relative"),
    "split": ("equal", "lemon"),
    "width_operator": ("tiled", "interleaved"),
}


def _validate_contrastive(config: Config) -> None:
    c = config.contrastive
    _validate_choices(config, "contrastive")
    _positive("contrastive", c, "temperature", "cosent_scale", "max_len")
    if c.objective != "none" and config.train.growth:
        raise ConfigError(
            "train.growth grows a pretraining run; contrastive fine-tuning does not grow (remove train.growth)"
        )
    if c.objective != "none" and c.max_len > config.model.max_seq_len:
        raise ConfigError(
            f"contrastive.max_len ({c.max_len}) must be <= model.max_seq_len ({config.model.max_seq_len})"
        )
    if c.batch_size < 0 or c.batch_size == 1:
        raise ConfigError(
            f"contrastive.batch_size={c.batch_size} is too small for in-batch negatives: use >= 2 (0: "
            "train.micro_batch_size * train.grad_accum * world size)"
        )
    if not 0.0 <= c.positive_min_score <= 5.0:
        raise ConfigError(
            f"contrastive.positive_min_score must be in [0, 5] (STS scores), got {c.positive_min_score}"
        )
    if c.objective == "cosent" and c.format != "sts":
        raise ConfigError("contrastive.objective=cosent needs scored pairs: set contrastive.format=sts")
    if c.objective == "infonce" and c.format == "text":
        raise ConfigError(
            "contrastive.objective=infonce needs sentence pairs: set contrastive.format=pairs or sts"
        )


def _validate_rdrop(config: Config) -> None:
    """R-Drop needs dropout (two passes without it are identical: nothing to regularise) and, for a
    contrastive objective, a distribution per row of its similarity matrix."""
    alpha, objective = config.train.rdrop_alpha, config.contrastive.objective
    if alpha < 0:
        raise ConfigError(f"train.rdrop_alpha must be >= 0 (0 turns R-Drop off), got {alpha}")
    if alpha == 0:
        return
    if config.model.dropout == 0:
        raise ConfigError(
            f"train.rdrop_alpha={alpha} needs model.dropout > 0: without dropout the two passes are "
            "identical and there is nothing to regularise (R-Drop used 0.1); set model.dropout or "
            "train.rdrop_alpha=0"
        )
    # Imported here, not at the top: the objectives import this module (as ``_registry`` does).
    from growth.objectives.contrastive_losses import similarity_logits

    if objective != "none" and similarity_logits(objective) is None:
        raise ConfigError(
            f"train.rdrop_alpha={alpha} with contrastive.objective={objective}: R-Drop compares the two "
            "passes' similarity distributions, and CoSENT ranks pair cosines without one; use simcse or "
            "infonce, or train.rdrop_alpha=0"
        )
