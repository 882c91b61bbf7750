"""The callbacks a run is built with (``growth/train/run.py:build_callbacks``), each with its ``priority``
(the order table: docs/architecture.md)."""

from growth.train.callbacks.checkpointer import Checkpointer
from growth.train.callbacks.depth_ramp import DepthRamp
from growth.train.callbacks.ema import EMAUpdater
from growth.train.callbacks.evaluator import Evaluator
from growth.train.callbacks.feature_redraw import FeatureRedraw
from growth.train.callbacks.graceful_stop import GracefulStop
from growth.train.callbacks.growth_events import GrowthEventLogger
from growth.train.callbacks.growth_schedule import GrowthSchedule
from growth.train.callbacks.logger import TensorBoardLogger
from growth.train.callbacks.samples import TextSamples

__all__ = [
    "Checkpointer",
    "DepthRamp",
    "EMAUpdater",
    "Evaluator",
    "FeatureRedraw",
    "GracefulStop",
    "GrowthEventLogger",
    "GrowthSchedule",
    "TensorBoardLogger",
    "TextSamples",
]
