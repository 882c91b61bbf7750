"""Callbacks declare their order (``priority``), and a growth stage swaps the model through
``Trainer.replace_model``: the callbacks that hold model state hear ``on_model_replaced``."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import torch

import growth.train.callbacks as builtin
from growth.checkpoint import RunState
from growth.distributed import World
from growth.model import build_model
from growth.model.transformer import depth_gates
from growth.train.callback import Callback, ModelReplacement
from growth.train.callbacks import DepthRamp, EMAUpdater
from growth.train.ema import EMA
from growth.train.trainer import Trainer
from tests.conftest import tiny_model_config

DOCS = Path(__file__).parents[2] / "docs" / "architecture.md"


class Recorder(Callback):
    def __init__(self, label: str, seen: list[str], priority: int | None = None):
        self.label, self.seen = label, seen
        if priority is not None:
            self.priority = priority

    def pre_step(self, trainer) -> None:
        self.seen.append(self.label)

    def on_model_replaced(self, trainer, replacement) -> None:
        self.seen.append(f"{self.label} saw {type(trainer.engine).__name__}")


def trainer_with(callbacks, engine=None, module=None) -> Trainer:
    return Trainer(engine, module, RunState(), World(0, 0, 1), 10, 0, callbacks)


def test_hooks_run_highest_priority_first_and_equal_priorities_in_the_given_order():
    seen: list[str] = []
    callbacks = [
        Recorder("user a", seen),
        Recorder("stop", seen, priority=-100),
        Recorder("early", seen, priority=100),
        Recorder("user b", seen),
        Recorder("middle", seen, priority=50),
    ]
    trainer_with(callbacks).call("pre_step")
    assert seen == ["early", "middle", "user a", "user b", "stop"]


def test_the_built_in_priorities_are_the_documented_table():
    """docs/architecture.md's "Callback order" table lists every built-in callback with its priority."""
    table = dict(
        (name, int(priority))
        for priority, name in re.findall(r"^\| (-?\d+) \| `(\w+)` \|", DOCS.read_text(), flags=re.M)
    )
    classes = {name: getattr(builtin, name) for name in builtin.__all__}
    assert table == {name: cls.priority for name, cls in classes.items()}
    assert len(set(table.values())) == len(table)  # a strict order: no two built-ins tie
    assert min(table.values()) == classes["GracefulStop"].priority < Callback.priority


class FakeEngine:
    """What replace_model uses of a DeepSpeed engine: ``module`` and ``destroy``."""

    def __init__(self, module, log: list[str]):
        self.module, self.log = module, log

    def destroy(self) -> None:
        self.log.append("destroyed old engine")


def test_replace_model_destroys_the_old_engine_first_then_tells_the_callbacks_in_order():
    torch.manual_seed(0)
    small, grown = build_model(tiny_model_config()), build_model(tiny_model_config("model.n_layers=3"))
    log: list[str] = []
    old = FakeEngine(small, log)
    module = SimpleNamespace(network=small)
    ema = EMAUpdater(EMA(small, decay=0.9))
    ramp = DepthRamp()
    trainer = trainer_with([Recorder("user", log), ramp, ema], engine=old, module=module)
    trainer.state.step = 7
    grown_ema = {
        "decay": 0.9,
        "updates": 5,
        "weights": {n: p.detach() + 1 for n, p in grown.named_parameters()},
    }

    def build_engine(network):
        log.append("built new engine")
        assert network is grown and module.network is grown
        return SimpleNamespace(module=network)

    trainer.replace_model(grown, build_engine, ModelReplacement(grown_ema, ramp_layers=(2,), ramp_steps=4))

    assert log == ["destroyed old engine", "built new engine", "user saw SimpleNamespace"]
    assert trainer.engine.module is grown and module.network is grown
    # The EMA averages the grown parameters from the grown averaged weights (copied exactly, fp32).
    assert ema.ema.params.keys() == dict(grown.named_parameters()).keys() and ema.ema.updates == 5
    for name, param in grown.named_parameters():
        assert ema.ema.params[name] is param
        assert torch.equal(ema.ema.shadow[name], grown_ema["weights"][name].float())
    # DepthRamp starts the new layer's ramp at this step: m = 0 now, (s - 7) / 4 later.
    assert depth_gates(grown.layers) == {2: 0.0}
    assert ramp.state_dict() == {"ramps": [{"layers": [2], "steps": 4, "start": 7}]}
    trainer.state.step = 8
    ramp.pre_step(trainer)
    assert depth_gates(grown.layers) == {2: 0.25}


def test_a_replacement_without_ramped_layers_leaves_the_depth_ramp_idle():
    network = build_model(tiny_model_config())
    trainer = trainer_with(
        [DepthRamp()], engine=FakeEngine(network, []), module=SimpleNamespace(network=network)
    )
    trainer.replace_model(network, lambda net: SimpleNamespace(module=net), ModelReplacement())
    assert depth_gates(network.layers) == {} and trainer.callbacks[0].state_dict() == {"ramps": []}


def test_growth_points_follow_an_auto_stage_once_it_is_decided(tmp_path):
    """The checkpointer saves (and keeps) the small model at every growth point; an ``at_step: auto`` stage
    becomes one when the run decides it (``GrowthSchedule.post_eval``/``load_state_dict`` set ``at_step``)."""
    from growth.config import GrowthStage, load_config
    from growth.train.callbacks import Checkpointer

    config = load_config(overrides=["train.max_steps=20"])
    config.train.growth = [
        GrowthStage(at_step=4, model={"n_layers": 6}),
        GrowthStage(at_step="auto", model={"n_layers": 8}),
    ]
    checkpointer = Checkpointer(tmp_path, 2, config)
    assert checkpointer.growth_points == [4]
    config.train.growth[1].at_step = 11
    assert checkpointer.growth_points == [4, 11]
