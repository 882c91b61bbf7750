"""Bad input data raises :class:`growth.errors.DataError` (re-exported here, where it was first defined)."""

from growth.errors import DataError

__all__ = ["DataError"]
