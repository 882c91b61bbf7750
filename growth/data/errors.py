"""One exception type for bad input data; launchers print its one-line message and exit non-zero."""


class DataError(ValueError):
    """Input data that cannot be used; the message says what is wrong and what to do."""
