"""matplotlib for the benchmarks' figures, imported only when a figure is drawn (the ``bench`` extra).
Every benchmark draws through here: nothing else imports matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


def figure(columns: int, width: float = 4.2, height: float = 3.4, rows: int = 1, **options: Any):
    """A figure of ``rows`` x ``columns`` axes (a flat list, row by row), each ``width`` x ``height`` inches."""
    fig, axes = pyplot().subplots(
        rows, columns, figsize=(width * columns, height * rows), squeeze=False, **options
    )
    return fig, [axis for row in axes for axis in row]


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """A figure as PNG, atomically (temporary name, then rename), then closed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.tight_layout()
    fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
    tmp.replace(path)
