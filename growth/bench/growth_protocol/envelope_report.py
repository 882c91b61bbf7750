"""What the envelope protocol prints and plots (``tools/bench_growth.py``)."""

from __future__ import annotations

from pathlib import Path

from growth.bench.plotting import figure, save_figure


def _interval(stats: dict, percent: bool = True) -> str:
    if percent:
        return f"{stats['mean']:+.1%} [{stats['low']:+.1%}, {stats['high']:+.1%}]"
    return f"{stats['mean']:+.4f} [{stats['low']:+.4f}, {stats['high']:+.4f}]"


def summary_lines(result: dict) -> list[str]:
    lines = ["LR sweeps: " + "; ".join(f"{size} -> {s['best']:g}" for size, s in result["lr_sweeps"].items())]
    for seed, data in result["seeds"].items():
        envelope = ", ".join(f"{flops:.2e} {loss:.4f}" for flops, loss in data["envelope"])
        lines.append(f"seed {seed}: envelope (FLOPs loss): {envelope}")
        for p in data["grown"]:
            lines.append(
                f"  grown {p['multiple']}x ({p['flops']:.2e} FLOPs): loss {p['loss']:.4f} +- {p['loss_se'] or 0:.4f} | "
                f"vs envelope {p['saving_vs_envelope']:+.3f}{'' if p['envelope_inside'] else ' (outside the envelope)'}"
                f" (best scratch size at this budget: {p['best_scratch_size']}) | vs large alone: with small "
                f"{p['saving_with_small']:+.3f}, without {p['saving_without_small']:+.3f}"
            )
    crossing = result["crossover"]
    for m, margin in crossing["margins"].items():
        lines.append(f"small minus large at {m}x: {_interval(margin['small_minus_large'], percent=False)}")
    lines.append(
        f"crossover inside the budgets (large ahead at {crossing['checked_at']}x beyond the seed spread): "
        f"{'yes' if crossing['inside'] else 'NO'}; fitted crossover {crossing['fitted_flops']:.3e} FLOPs"
    )
    law = result["scaling_law"]
    lines.append(
        f"L(N, D) = {law['E']:.3f} + {law['A']:.3g}/N^{law['alpha']:.3f} + {law['B']:.3g}/D^{law['beta']:.3f} "
        f"(rms residual {law['rms_residual']:.4f}); compute-optimal N: "
        + ", ".join(f"{c}: {n:.3g}" for c, n in law["optimal_params"].items())
    )
    for m, h in result["headline"].items():
        seeds = h["saving_vs_envelope"]["n"]
        lines.append(
            f"headline {m}x ({seeds} seed{'s' if seeds > 1 else ''}{'' if h['past_crossover'] else ', before the crossover'}):"
            f" saving vs envelope {_interval(h['saving_vs_envelope'])}; vs large alone with small "
            f"{h['saving_with_small']['mean']:+.3f}, without {h['saving_without_small']['mean']:+.3f}"
        )
    return lines


def plot(result: dict, path: Path) -> None:
    """Every scratch size's completed schedules and curves, the envelope, and the grown path (first seed bold)."""
    fig, (ax,) = figure(1, width=8.5, height=5.5)
    sizes = list(result["protocol"]["sizes"])
    for index, (_seed, data) in enumerate(result["seeds"].items()):
        alpha, first = (1.0, index == 0) if index == 0 else (0.35, False)
        for k, size in enumerate(sizes):
            points = sorted((p["flops"], p["loss"]) for p in data["scratch"] if p["size"] == size)
            ax.plot(
                *zip(*points),
                "o-",
                color=f"C{k}",
                alpha=alpha,
                markersize=4,
                label=f"{size} from scratch (fully decayed)" if first else None,
            )
            longest = max((p for p in data["scratch"] if p["size"] == size), key=lambda p: p["flops"])
            ax.plot(*zip(*longest["curve"]), color=f"C{k}", alpha=0.25 * alpha, linewidth=0.8)
        ax.plot(
            *zip(*data["envelope"]),
            "--",
            color="black",
            alpha=alpha,
            linewidth=1.2,
            label="envelope (best size per budget)" if first else None,
        )
        for p in data["grown"]:
            ax.plot(*zip(*p["curve"]), color="C3", alpha=0.6 * alpha, linewidth=1)
            ax.plot(
                p["flops"],
                p["loss"],
                "s",
                color="C3",
                alpha=alpha,
                label="grown (train.growth), fully decayed" if first and p is data["grown"][0] else None,
            )
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (LM head and attention counted)")
    ax.set_ylabel("validation loss (262k held-out tokens)")
    largest = max(result["headline"])
    h = result["headline"][largest]["saving_vs_envelope"]
    ax.set_title(
        f"growth vs the compute-optimal envelope: {h['mean']:+.1%} of compute saved at the largest budget "
        f"({h['n']} seed{'s' if h['n'] > 1 else ''})",
        fontsize=9,
    )
    finals = [p["loss"] for d in result["seeds"].values() for p in d["scratch"] + d["grown"]]
    ax.set_ylim(min(finals) - 0.1, max(finals) + 0.5)
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=120)
