"""The one error growth raises for a growth that cannot be made exact, or an option no operator takes."""


class GrowthError(ValueError):
    """A growth that cannot be made exact; the message says why and what to change."""
