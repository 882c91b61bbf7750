"""The callbacks a run is built with (``growth/train/run.py:build_callbacks``)."""

from growth.train.callbacks.checkpointer import Checkpointer
from growth.train.callbacks.depth_ramp import DepthRamp
from growth.train.callbacks.ema import EMAUpdater
from growth.train.callbacks.evaluator import Evaluator
from growth.train.callbacks.feature_redraw import FeatureRedraw
from growth.train.callbacks.growth_events import GrowthEventLogger
from growth.train.callbacks.logger import TensorBoardLogger

__all__ = [
    "Checkpointer",
    "DepthRamp",
    "EMAUpdater",
    "Evaluator",
    "FeatureRedraw",
    "GrowthEventLogger",
    "TensorBoardLogger",
]
