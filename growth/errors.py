"""The user errors: input a run or a tool cannot use, answered with one ``error: ...`` line and exit code 2.

Every layer raises one of these with a message that names the setting (``model.n_heads``, ``--from``, a
file) and the cause; ``growth/cli.py`` and ``growth/train/run.py`` catch :class:`UserError` and print it,
so a new kind of user error is a subclass here, not another entry in every ``except``. This module
imports nothing from growth: it sits below every layer.
"""

from __future__ import annotations


class UserError(ValueError):
    """Input that cannot be used; the message says what is wrong and what to do. A ``ValueError`` so
    callers that predate the hierarchy still catch it."""


class ConfigError(UserError):
    """A configuration that cannot be built; the message names the key and what to do."""


class DataError(UserError):
    """Input data that cannot be used; the message says what is wrong and what to do."""


class CheckpointError(ConfigError):
    """A checkpoint that is missing, damaged or in use; the message names the file and what to do.
    A ``ConfigError`` because a checkpoint is chosen by a setting (``train.init_from``, ``--from``)."""
