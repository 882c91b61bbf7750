"""What happens at a growth stage inside a run (``train.growth``; docs/design.md Sec. 4.12).

Before the first optimizer step after ``at_step``, on every rank, at any ZeRO stage and world size:

1. the small model is checkpointed (kept: a user can go back to it; a resume from it grows again);
2. its full weights, EMA weights and Adam moments (by name) are gathered on every rank and grown by
   ``growth.expand.grow_state`` — the same code path as ``tools/expand.py``;
3. the grown model must compute the small one's function on a validation probe batch (fp32:
   max |Δlogits| ≤ 1e-5 × max(1, |logits|)), else the run stops with one line, the small
   checkpoint intact;
4. the DeepSpeed engine is rebuilt around the grown model, the LR schedule continued at the same
   applied step (optionally re-warmed), the grown moments and EMA set, and training goes on with the
   next batch of the same data stream.

A checkpoint at step s holds the model of the stages with ``at_step < s``, so a run killed before a
growth resumes and grows at the same step, and one killed after it resumes with the grown model.

A stage's operators are its ``GrowthOptions`` fields (``depth_operator``, ``ramp_steps``, ``noise``, ``split``,
``split_alpha``, ``width_operator``). Ramped layers (the default for Post-LN/DeepNorm depth) are handed to the
``DepthRamp`` callback, which raises their gate from 0 to 1 over ``ramp_steps`` steps; G_stack is not
function-preserving, so its event records the loss change (``function_preserving`` 0).
"""

from __future__ import annotations

import dataclasses
import math

from growth.checkpoint import consolidated_state_dict, tag_for
from growth.checkpoint.layout import COMPLETE
from growth.config import Config
from growth.distributed.deepspeed_adapter import all_adam_moments, set_adam_moments
from growth.errors import ConfigError
from growth.expand import GrowthError, GrowthOptions, GrowthPlan, plan_growth
from growth.expand.grow_state import GrownState, grow_state, materialize
from growth.model.accounting import flops_per_token
from growth.model.config import ModelConfig
from growth.train import auto_growth
from growth.train.auto_growth import AUTO
from growth.train.callback import Callback
from growth.train.callbacks.checkpointer import Checkpointer
from growth.train.callbacks.depth_ramp import DepthRamp
from growth.train.callbacks.ema import EMAUpdater, averaged_weights
from growth.train.config import GrowthStage
from growth.train.ema import EMA
from growth.train.engine import build_engine, deepspeed_config

TOLERANCE = 1e-5


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


def resolve_auto_stage(config: Config, state) -> None:
    """Give an ``at_step: auto`` stage the step a checkpoint's run decided (``GrowthSchedule``'s saved state),
    so a resume builds the model that checkpoint holds and grows where the interrupted run did."""
    decided = ((state.callbacks if state is not None else {}).get(GrowthSchedule.__name__) or {}).get(
        "decided"
    )
    stages = config.train.growth
    if decided is not None and stages and stages[-1].at_step == AUTO:
        stages[-1].at_step = int(decided)


class GrowthSchedule(Callback):
    def __init__(self, config: Config):
        self.config, self.models = config, stage_models(config)
        last = config.train.growth[-1]
        self.auto = last if last.at_step == AUTO else None  # only the last stage may be auto
        self.history: list[tuple[float, float]] = []  # (FLOPs seen, val loss) of the model before that stage
        self.decided: int | None = None

    def pre_step(self, trainer) -> None:
        for index, stage in enumerate(self.config.train.growth):
            if stage.at_step == trainer.state.step:
                self.grow(trainer, index, stage)

    def post_eval(self, trainer, scalars: dict[str, float]) -> None:
        """With ``at_step: auto``: record the evaluation and decide whether to grow after this step."""
        stage, state = self.auto, trainer.state
        grown = sum("stage" in event for event in state.growth_events)
        if stage is None or self.decided is not None or grown < len(self.config.train.growth) - 1:
            return
        self.history.append((state.flops_seen, scalars["val/loss"]))
        large_params = (
            flops_per_token(self.models[-1], self.config.data.seq_len) / 6
        )  # N of the law: C = 6 N D
        decision = auto_growth.decide(
            self.history,
            stage.auto_window,
            auto_growth.Law(*stage.auto_law),
            large_params,
            state.step,
            stage.auto_latest,
        )
        slopes = {
            "growth/auto_small_slope": decision.small_slope,
            "growth/auto_large_slope": decision.large_slope,
        }
        trainer.log(state.step, {k: v for k, v in slopes.items() if math.isfinite(v)})
        if decision.grow:
            self.decided = stage.at_step = state.step
            if trainer.world.is_main:
                print(f"auto growth: growing after step {state.step}: {decision.reason}", flush=True)

    def state_dict(self) -> dict:
        """An auto stage's evaluations and decision, in every checkpoint from then on (a resume reads it back
        through ``resolve_auto_stage`` before building the model)."""
        if self.auto is None and self.decided is None:
            return {}
        return {"history": self.history, "decided": self.decided}

    def load_state_dict(self, state: dict) -> None:
        self.history = [tuple(point) for point in state.get("history", [])]
        self.decided = state.get("decided")
        if self.decided is not None and self.auto is not None:
            self.auto.at_step = self.decided

    def grow(self, trainer, index: int, stage: GrowthStage) -> None:
        self._keep_small_checkpoint(trainer)
        engine, world, state = trainer.engine, trainer.world, trainer.state
        ema = averaged_weights(trainer)
        small = self.models[index]
        ramp = trainer.callback(DepthRamp)
        if ramp is not None and ramp.active(trainer):
            raise ConfigError(
                f"train.growth[{index}] at step {stage.at_step}: new layers of an earlier growth are "
                f"still ramping in (m < 1); grow after the ramp; {trainer.recovery_note}"
            )
        try:
            grown = grow_state(
                small,
                self.models[index + 1],
                consolidated_state_dict(engine, world, every_rank=True),
                ema.state_dict() if ema is not None else None,
                all_adam_moments(engine),
                trainer.module.probe_batch(),
                stage_options(stage),
                TOLERANCE,
            )
        except GrowthError as err:
            raise ConfigError(
                f"train.growth[{index}] at step {stage.at_step}: {err}; {trainer.recovery_note}"
            ) from None
        self._rebuild(trainer, grown, stage)
        if grown.plan.ramp_layers:
            if ramp is None:
                raise ConfigError(
                    f"train.growth[{index}] ramps layers in but the run has no DepthRamp callback "
                    "(growth/train/run.py:build_callbacks adds it)"
                )
            ramp.begin(trainer, grown.plan.ramp_layers, stage.ramp_steps)
        event = {
            "stage": index,
            "source_step": state.step,
            "schedule_step": schedule_position(state),
            "tokens_seen": state.tokens_seen,
            "flops_seen": state.flops_seen,
            **{
                k: grown.report[k]
                for k in (
                    "loss_before",
                    "loss_after",
                    "params_before",
                    "params_after",
                    "max_abs_logit_diff",
                    "function_preserving",
                    "depth_operator",
                    "width_operator",
                )
            },
            **(
                {"ramp_layers": grown.plan.ramp_layers, "ramp_steps": stage.ramp_steps}
                if grown.plan.ramp_layers
                else {}
            ),
        }
        state.growth_events.append(event)
        scalars = {
            f"growth/{k}": float(v)
            for k, v in event.items()
            if k not in ("tokens_seen", "flops_seen") and isinstance(v, (int, float))
        }
        trainer.log(state.step, scalars)
        trainer.log(state.tokens_seen, {f"by_tokens/{k.replace('/', '_')}": v for k, v in scalars.items()})
        if world.is_main:
            change = (
                f"max |logit diff| {grown.report['max_abs_logit_diff']:.2e}"
                if grown.plan.function_preserving
                else f"not function-preserving ({grown.plan.depth_operator}): loss {grown.report['loss_before']:.4f} -> "
                f"{grown.report['loss_after']:.4f}"
            )
            ramped = (
                f", layers {grown.plan.ramp_layers} ramped in over {stage.ramp_steps} steps"
                if grown.plan.ramp_layers
                else ""
            )
            print(
                f"grew at step {state.step} (stage {index}): {grown.report['params_before']:,} -> "
                f"{grown.report['params_after']:,} parameters, {change}{ramped}",
                flush=True,
            )

    def _keep_small_checkpoint(self, trainer) -> None:
        checkpointer = trainer.callback(Checkpointer)
        if (
            checkpointer is not None
            and not (checkpointer.root / tag_for(trainer.state.step) / COMPLETE).is_file()
        ):
            checkpointer.save(trainer)

    def _rebuild(self, trainer, grown: GrownState, stage: GrowthStage) -> None:
        """A new engine around the grown model, on the same schedule position, with the grown state."""
        applied = schedule_position(trainer.state)
        trainer.engine.destroy()
        network = materialize(grown.plan.new, grown.weights)
        trainer.module.network = network
        engine = build_engine(
            network,
            self.config.train,
            deepspeed_config(self.config.train, trainer.world.size),
            schedule_start=applied,
            rewarmup=(applied, stage.rewarmup_steps),
        )
        if grown.moments is not None:
            set_adam_moments(engine, grown.moments)
        owner = trainer.callback(EMAUpdater)
        if owner is not None:
            ema = EMA(engine.module, owner.ema.decay, owner.ema.warmup)
            ema.load_state_dict(grown.ema)
            owner.ema = ema
        trainer.engine = engine
