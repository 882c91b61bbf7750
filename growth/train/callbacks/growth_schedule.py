"""What happens at a growth stage inside a run (``train.growth``; docs/design.md Sec. 4.12).

Before the first optimizer step after ``at_step``, on every rank, at any ZeRO stage and world size:

1. the small model is checkpointed (by the ``Checkpointer``, after step ``at_step``; kept: a user can go back
   to it; a resume from it grows again);
2. its full weights, EMA weights and Adam moments (by name) are gathered on every rank and grown by
   ``growth.expand.grow_state`` — the same code path as ``tools/expand.py``;
3. the grown model must compute the small one's function on a validation probe batch (fp32:
   max |Δlogits| ≤ 1e-5 × max(1, |logits|)), else the run stops with one line, the small
   checkpoint intact;
4. the trainer swaps the grown model in (``Trainer.replace_model``): a new DeepSpeed engine around it, the
   LR schedule continued at the same applied step (optionally re-warmed), the grown moments set; the
   callbacks that hold model state hear ``on_model_replaced`` (the EMA takes the grown averaged weights,
   ``DepthRamp`` starts the ramp), and training goes on with the next batch of the same data stream.

A checkpoint at step s holds the model of the stages with ``at_step < s``, so a run killed before a
growth resumes and grows at the same step, and one killed after it resumes with the grown model.

A stage's operators are its ``GrowthOptions`` fields (``depth_operator``, ``ramp_steps``, ``noise``, ``split``,
``split_alpha``, ``width_operator``). Ramped layers (the default for Post-LN/DeepNorm depth) are handed to the
``DepthRamp`` callback, which raises their gate from 0 to 1 over ``ramp_steps`` steps; G_stack is not
function-preserving, so its event records the loss change (``function_preserving`` 0).
"""

from __future__ import annotations

import math

from growth.checkpoint import consolidated_state_dict
from growth.config import Config
from growth.distributed.deepspeed_adapter import all_adam_moments, set_adam_moments
from growth.errors import ConfigError
from growth.expand import GrowthError
from growth.expand.grow_state import GrownState, grow_state, materialize
from growth.model.accounting import flops_per_token
from growth.model.transformer import depth_gates
from growth.train import auto_growth
from growth.train.auto_growth import AUTO
from growth.train.callback import Callback, ModelReplacement
from growth.train.callbacks.ema import averaged_weights
from growth.train.config import GrowthStage
from growth.train.engine import build_engine, deepspeed_config
from growth.train.growth_stages import schedule_position, stage_models, stage_options

TOLERANCE = 1e-5


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
    # After the checkpointer (it saves the small model at the growth point in post_step); before
    # FeatureRedraw, DepthRamp and TextSamples, whose pre_step must see the grown model.
    priority = 50

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
        """The small model was checkpointed after this step (the ``Checkpointer`` saves every growth point);
        grow it, hand the trainer the grown model (``replace_model``) and record the event."""
        engine, world, state = trainer.engine, trainer.world, trainer.state
        ema = averaged_weights(trainer)
        small = self.models[index]
        if depth_gates(getattr(trainer.module.network, "layers", ())):  # gates stay only while a ramp runs
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
        self._replace_model(trainer, grown, stage)
        if grown.plan.ramp_layers and not depth_gates(trainer.module.network.layers):
            raise ConfigError(
                f"train.growth[{index}] ramps layers in but the run has no DepthRamp callback "
                "(growth/train/run.py:build_callbacks adds it)"
            )
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

    def _replace_model(self, trainer, grown: GrownState, stage: GrowthStage) -> None:
        """The trainer trains the grown model from here on: a new engine around it, on the same schedule
        position (re-warmed by ``rewarmup_steps``), with the grown Adam moments; the EMA and the depth ramp
        follow through ``on_model_replaced``."""
        applied = schedule_position(trainer.state)

        def engine_for(network):
            engine = build_engine(
                network,
                self.config.train,
                deepspeed_config(self.config.train, trainer.world.size),
                schedule_start=applied,
                rewarmup=(applied, stage.rewarmup_steps),
            )
            if grown.moments is not None:
                set_adam_moments(engine, grown.moments)
            return engine

        replacement = ModelReplacement(grown.ema, tuple(grown.plan.ramp_layers), stage.ramp_steps)
        trainer.replace_model(materialize(grown.plan.new, grown.weights), engine_for, replacement)
