"""Sampled text while a run trains (``train.sample_interval``, ``train.sample_prompts``): each prompt's
continuation in TensorBoard's text tab and the log, every N steps and right before and after each growth stage.

Before a growth (after the last step of the small model) and after it (the grown model, before its first step)
the samples are drawn with the same seed: a function-preserving growth writes the same text (in fp32; bf16
rounds the two models differently). Sampling changes nothing in training: rank 0 samples from a copy of the
consolidated weights (gathered one tensor at a time, a collective under ZeRO-3), in eval mode, with its own
generator seeded by ``train.seed`` and the step; torch's global RNG streams are left as they were, so the losses
of a run with samples equal those of one without, bit for bit, resumed or not.
"""

from __future__ import annotations

from pathlib import Path

import torch

from growth import checkpoint as ckpt
from growth.config import Config
from growth.data.prompt import encode_prompt, sample_text
from growth.data.tokenizer import Tokenizer
from growth.model.sampling import SamplingOptions, generate, inference_model
from growth.model.transformer import depth_gates
from growth.train.callback import Callback

# A short look at the model, not a benchmark of it: the settings tools/generate.py defaults to, fewer tokens.
OPTIONS = SamplingOptions(max_new_tokens=64, temperature=0.8)


class TextSamples(Callback):
    priority = 20  # pre_step after GrowthSchedule and DepthRamp: it samples the model they leave

    def __init__(self, config: Config, tokenizer: Path):
        self.interval, self.prompts = config.train.sample_interval, config.train.sample_prompts
        self.growth_steps = [stage.at_step for stage in config.train.growth]
        self.seed, self.precision = config.train.seed, config.train.precision
        self.tokenizer_path = tokenizer
        self.ids: list[list[int]] = []

    def pre_train(self, trainer) -> None:
        """Every rank checks the prompts (a refusal is the same line everywhere)."""
        self.tokenizer = Tokenizer.load(self.tokenizer_path)
        self.ids = [
            encode_prompt(self.tokenizer, prompt, f"train.sample_prompts[{i}]")
            for i, prompt in enumerate(self.prompts)
        ]

    def post_step(self, trainer, result) -> None:
        step = trainer.state.step
        if step in self.growth_steps:  # the next pre_step grows: the small model's last text
            self.sample(
                trainer, "samples/before_growth", f"before growth stage {self.growth_steps.index(step)}"
            )
        elif step % self.interval == 0:
            self.sample(trainer, "samples", "")

    def pre_step(self, trainer) -> None:
        """After ``GrowthSchedule.pre_step`` (a lower priority): the grown model."""
        step = trainer.state.step
        if step in self.growth_steps:
            self.sample(
                trainer, "samples/after_growth", f"after growth stage {self.growth_steps.index(step)}"
            )

    def sample(self, trainer, tag: str, when: str) -> None:
        weights = ckpt.consolidated_state_dict(trainer.engine, trainer.world)  # collective
        if trainer.world.is_main:
            self.write(trainer, tag, when, self.texts(trainer, weights))

    def texts(self, trainer, weights: dict[str, torch.Tensor]) -> list[str]:
        """Each prompt continued by a copy of the network as it stands (weights, depth gates)."""
        network = trainer.module.network
        device = next(network.parameters()).device
        dtype = torch.bfloat16 if self.precision == "bf16" and device.type == "cuda" else torch.float32
        model = inference_model(network.config, weights, device, dtype, depth_gates(network.layers))
        eos = self.tokenizer.eos_id if self.tokenizer.eos_id >= 0 else None
        texts = []
        for ids in self.ids:
            # seeded by the step alone: before and after a growth (one step) draw alike
            generator = torch.Generator(device).manual_seed(self.seed + trainer.state.step)
            out = generate(model, torch.tensor([ids], device=device), OPTIONS, generator, eos)
            texts.append(sample_text(self.tokenizer, out[0].tolist(), len(ids)))
        return texts

    def write(self, trainer, tag: str, when: str, texts: list[str]) -> None:
        """TensorBoard's text tab (``<tag>/<prompt index>``) and the log, through the run's loggers."""
        step = trainer.state.step
        heading = f"samples at step {step}" + (f" ({when})" if when else "")
        blocks = ["\n".join(f"  {line}" for line in text.splitlines()) for text in texts]
        trainer.log_text(
            step,
            {f"{tag}/{index}": text for index, text in enumerate(texts)},
            f"{heading}:\n" + "\n  --\n".join(blocks),
        )
