"""matplotlib for the benchmarks' figures, imported only when a figure is drawn (the ``bench`` extra)."""

from __future__ import annotations


class MissingPlotting(ImportError):
    """matplotlib is not installed; the message says how to install it."""


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend, or MissingPlotting with the install line."""
    try:
        import matplotlib
    except ImportError:
        raise MissingPlotting(
            "the benchmark figures need matplotlib: pip install 'growth[bench]' (or the dev extra)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
