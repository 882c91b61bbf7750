#!/usr/bin/env python3
"""Pretrain: `deepspeed [--num_gpus N] launch/pretrain.py [--config FILE] [key=value ...]`.

Also runs under `torchrun`, `accelerate launch`, plain `python`, and multi-node DeepSpeed.
"""

from growth.cli import exit_after_run
from growth.train.run import main

if __name__ == "__main__":
    exit_after_run(main())
