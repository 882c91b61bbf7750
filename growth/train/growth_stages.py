"""What a run's growth stages (``train.growth``) make, read from the config alone: the model before and after
each stage, the model at a given step, the LR schedule's position. Used to build the network and engine
(``growth/train/run.py``), to check a resume, and by the ``GrowthSchedule`` callback that grows
(``growth/train/callbacks/growth_schedule.py``)."""

from __future__ import annotations

import dataclasses

from growth.config import Config
from growth.errors import ConfigError
from growth.expand import GrowthError, GrowthOptions, GrowthPlan, plan_growth
from growth.model.config import ModelConfig
from growth.train.auto_growth import AUTO
from growth.train.config import GrowthStage


def stage_models(config: Config) -> list[ModelConfig]:
    """The model before any stage, then after each one; a stage the operators cannot make exact is
    refused with one line naming ``train.growth[i].model``."""
    return [config.model, *(plan.new for plan in stage_plans(config))]


def stage_options(stage: GrowthStage) -> GrowthOptions:
    return GrowthOptions.of(stage)


def stage_plans(config: Config) -> list[GrowthPlan]:
    """Each stage's growth plan, from the previous stage's model with the stage's operators; a stage whose
    layers would still be ramping in when the next one grows is refused (grow after the ramp)."""
    plans: list[GrowthPlan] = []
    model = config.model
    for index, stage in enumerate(config.train.growth):
        target = dataclasses.replace(model, **stage.model)
        try:
            plans.append(plan_growth(model, target, stage_options(stage)))
        except (GrowthError, ConfigError) as err:
            raise ConfigError(f"train.growth[{index}].model: {err}") from None
        model = plans[-1].new
        if index and plans[-2].ramp_layers and stage.at_step != AUTO:  # auto: checked when it grows
            previous = config.train.growth[index - 1]
            if stage.at_step < previous.at_step + previous.ramp_steps:
                raise ConfigError(
                    f"train.growth[{index}].at_step={stage.at_step} falls inside the ramp of "
                    f"train.growth[{index - 1}] (new layers ramp in until step "
                    f"{previous.at_step + previous.ramp_steps}); grow later or lower its ramp_steps"
                )
    return plans


def needs_depth_ramp(config: Config) -> bool:
    """A stage ramps layers in, or the run starts from a checkpoint that may carry a ramp (tools/expand.py)."""
    return bool(config.train.init_from) or any(plan.ramp_layers for plan in stage_plans(config))


def schedule_position(state) -> int:
    """The LR schedule's position: applied optimizer steps (skipped ones do not move it)."""
    return state.step - state.skipped_steps


def rewarmup_in_effect(config: Config, state) -> tuple[int, int]:
    """(schedule step of the last in-run growth, its rewarmup_steps), to rebuild the schedule on resume."""
    stages = [e for e in state.growth_events if "stage" in e and e["stage"] < len(config.train.growth)]
    if not stages:
        return 0, 0
    last = stages[-1]
    return int(last["schedule_step"]), config.train.growth[last["stage"]].rewarmup_steps


def model_at(config: Config, step: int) -> ModelConfig:
    """The model a run holds after ``step`` optimizer steps (the stages with ``at_step < step``; an ``auto``
    stage not yet decided has not grown)."""
    done = sum(stage.at_step != AUTO and stage.at_step < step for stage in config.train.growth)
    return stage_models(config)[done]
