"""growth: distributed pretraining with function-preserving model growth."""

__version__ = "0.1.0"
