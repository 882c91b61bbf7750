"""growth.config: YAML round trip, typed overrides, and a one-line message for each kind of bad input."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from growth.config import (
    ROLES,
    Config,
    ConfigError,
    ModelConfig,
    fields_with_role,
    load_config,
    model_differences,
    model_field_role,
)


def test_default_is_valid_and_resolved():
    config = load_config()
    assert config.model.gau_expansion == 2 * config.model.d_model  # e = 2d resolved, not left as 0
    assert config.data.corpus.startswith("bundled:")


def test_yaml_round_trip(tmp_path):
    config = load_config(overrides=["model.layer=gau", "model.chunk_size=16", "train.lr=3e-4"])
    path = tmp_path / "run.yaml"
    config.save(path)
    assert load_config(path).to_dict() == config.to_dict()
    assert not (tmp_path / "run.yaml.tmp").exists()


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("model.d_model=256", "d_model", 256),
        ("model.n_heads=4", "n_heads", 4),
        ("model.rope_base=500000", "rope_base", 500000.0),
        ("model.tie_embeddings=true", "tie_embeddings", True),
        ("model.position=none", "position", "none"),
        ("model.dropout=0.1", "dropout", 0.1),
    ],
)
def test_overrides_convert_to_field_type(override, key, expected):
    extra = ["model.head_dim=64"] if key == "d_model" else []
    config = load_config(overrides=[override, *extra])
    value = getattr(config.model, key)
    assert value == expected and type(value) is type(expected)


def test_yaml_scientific_notation_is_a_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n")  # YAML 1.1 reads this as a string
    assert load_config(path).train.lr == pytest.approx(1e-3)


def test_override_beats_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"n_layers": 6}}))
    assert load_config(path, ["model.n_layers=3"]).model.n_layers == 3


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.d_model=48"], "model.n_heads * model.head_dim must equal model.d_model (4 * 32 != 48)"),
        (["model.d_modl=64"], "unknown key 'model.d_modl'; did you mean model.d_model?"),
        (["optim.lr=1"], "unknown section 'optim'"),
        (["model.d_model=abc"], "model.d_model expects int, got 'abc'"),
        (["model.d_model=1.5"], "model.d_model expects int, got 1.5"),
        (["model.tie_embeddings=maybe"], "model.tie_embeddings expects bool"),
        (["train.lr=nan"], "train.lr must be a finite number"),
        (["model.residual=sandwich"], "model.residual must be one of pre | post | deepnorm, got 'sandwich'"),
        (
            ["model.layer=gau", "model.gau_attention=relu2", "model.attention_scale=logn"],
            "model.attention_scale=logn only applies to softmax attention",
        ),
        (["model.chunk_size=16"], "model.chunk_size (FLASH) needs model.layer=gau"),
        (["model.rope_dim=7"], "model.rope_dim must be even and <= model.head_dim (32), got 7"),
        (["data.seq_len=1024"], "data.seq_len (1024) must be <= model.max_seq_len (256)"),
        (["train.zero_stage=5"], "train.zero_stage must be 0, 1, 2 or 3, got 5"),
        (["model.dropout=1.0"], "model.dropout must be in [0, 1)"),
        (["model.n_layers=0"], "model.n_layers must be > 0, got 0"),
        (["model.d_model"], "override 'model.d_model' is not key=value"),
        (["d_model=64"], "key 'd_model' must be section.key"),
    ],
)
def test_bad_input_names_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: [1, 2\n", "is not valid YAML"),
        ("- 1\n- 2\n", "must be a mapping with sections model/data/train"),
        ("model: 3\n", "model in"),
        ("model:\n  n_layers: '4'\n", "model.n_layers expects int, got '4'"),
        ("model:\n  dropout: true\n", "model.dropout expects float, got True"),
    ],
)
def test_bad_yaml_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as err:
        load_config(path)
    assert message in str(err.value)


def test_yaml_reads_exponent_floats_at_any_depth(tmp_path):
    # YAML 1.1 (PyYAML) reads 3e-4 as a string; the config reads it as YAML 1.2 does, also inside lists
    path = tmp_path / "run.yaml"
    path.write_text(
        "train:\n  lr: 3e-4\n  growth:\n    - at_step: auto\n      model: {n_layers: 8}\n"
        "      auto_law: [1e-3, 406.4, 0.34, 4.1e+2, 0.28]\n"
    )
    config = load_config(path)
    assert config.train.lr == pytest.approx(3e-4, rel=1e-12)
    assert config.train.growth[0].auto_law == pytest.approx([1e-3, 406.4, 0.34, 410.0, 0.28], rel=1e-12)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.growth=5", "train.growth expects a list, got 5 (from command line)"),
        ("train.growth=[{model: {n_layers: 8}}]", "train.growth[0].at_step is required (from command line)"),
        (
            "train.growth=[{at_step: 5, model: {n_layers: 8}, seed: x}]",
            "train.growth[0].seed expects int, got 'x'",
        ),
        ("data.sources=[{corpus: a, weight: x}]", "data.sources[0].weight expects float, got 'x'"),
        ("data.sources=[3]", "data.sources[0] must be a mapping with keys corpus, weight, text_field, got 3"),
        ("train.save_steps=[10, x]", "train.save_steps[1] expects int, got 'x'"),
        ("model.d_model=true", "model.d_model expects int, got True"),
    ],
)
def test_a_nested_value_error_names_its_element(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert str(err.value).startswith(message)


def test_command_line_text_reads_as_the_key_wants():
    config = load_config(overrides=["train.name=123", "train.max_steps=1e3", "train.sample_prompts=[1, x]"])
    assert (config.train.name, config.train.max_steps, config.train.sample_prompts) == (
        "123",
        1000,
        ["1", "x"],
    )
    assert isinstance(config.train.max_steps, int)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/run.yaml")


def test_empty_file_is_the_default(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path).to_dict() == load_config().to_dict()


def test_config_is_plain_data():
    assert yaml.safe_load(Config().to_yaml())["model"]["layer"] == "transformer"


def test_every_model_field_has_exactly_one_known_role():
    """Fails when a ModelConfig field is added without saying whether growth/resume may change it."""
    for f in dataclasses.fields(ModelConfig):
        assert f.metadata.get("growth") in ROLES, f"model.{f.name} has role {f.metadata.get('growth')!r}"
    grouped = [name for role in ROLES for name in fields_with_role(role)]
    assert sorted(grouped) == sorted(f.name for f in dataclasses.fields(ModelConfig))  # a partition


def test_roles_of_representative_fields():
    assert [
        model_field_role(n) for n in ("residual", "head_dim", "max_seq_len", "d_model", "norm_eps", "dropout")
    ] == [
        "fixed",
        "growable",
        "fixed",
        "growable",
        "growable",
        "free",
    ]  # head_dim: head-size growth (issue 12)
    # growth/train/init_from.py lets exactly these differ; they change training, not the function.
    # performer_redraw_interval: when the random features are redrawn (issue 25), not what they compute.
    assert fields_with_role("free") == ("performer_redraw_interval", "dropout", "init_std")
    with pytest.raises(ConfigError, match="model.d_modl is not a model field"):
        model_field_role("d_modl")
    with pytest.raises(ValueError, match="unknown model field role 'frozen'"):
        fields_with_role("frozen")


def test_model_differences_reports_only_the_asked_roles():
    old = ModelConfig()
    new = dataclasses.replace(old, d_model=256, residual="post", dropout=0.1, init_std=0.01)
    assert model_differences(old, new, "fixed") == [("residual", "pre", "post")]
    assert model_differences(old, new, ("growable", "free")) == [
        ("d_model", 128, 256),
        ("dropout", 0.0, 0.1),
        ("init_std", 0.02, 0.01),
    ]
    assert model_differences(old, dataclasses.replace(old), ROLES) == []
    with pytest.raises(ValueError):
        model_differences(old, new, ("fixed", "grown"))


def test_simcse_variant_defaults_to_symmetric_and_accepts_paper():
    assert load_config().contrastive.simcse_variant == "symmetric"
    assert load_config(overrides=["contrastive.simcse_variant=paper"]).contrastive.simcse_variant == "paper"
    with pytest.raises(
        ConfigError, match=r"contrastive.simcse_variant must be one of symmetric \| paper, got 'eq1'"
    ):
        load_config(overrides=["contrastive.simcse_variant=eq1"])


def test_bad_simcse_variant_is_one_error_line_and_exit_code_2(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [
            sys.executable,
            str(root / "launch/pretrain.py"),
            "contrastive.simcse_variant=eq1",
            f"train.out_dir={tmp_path / 'run'}",
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert "contrastive.simcse_variant must be one of symmetric | paper" in errors[0]
    assert not (tmp_path / "run").exists()
