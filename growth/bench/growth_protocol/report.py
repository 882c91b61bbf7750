"""What ``tools/bench_growth.py --large-only`` prints and plots (the JSON: ``harness.write_json``)."""

from __future__ import annotations

from pathlib import Path

from growth.bench.plotting import figure, save_figure


def summary_lines(result: dict) -> list[str]:
    lines = []
    for seed, data in result["seeds"].items():
        front = ", ".join(f"{b['multiple']}x {b['loss']:.4f}" for b in data["scratch"]["budgets"])
        lines.append(f"seed {seed}: scratch final loss by budget: {front}")
        for path in data["grown"]:
            lines.append(
                f"  grown at {path['multiple']}x: loss {path['loss']:.4f} | FLOPs saved: with small "
                f"{path['saving_with_small']:.3f}, without {path['saving_without_small']:.3f}"
                f"{' (extrapolated)' if path['extrapolated'] else ''} | loss gap at equal FLOPs "
                f"{path['loss_gap_at_equal_flops']:+.4f} | wall {path['wall_ratio']:.2f}x"
            )
    small = result["small_alone"]
    lines.append(
        f"small model alone at {small['multiple']}x: loss {small['loss']:.4f}, saving "
        f"{small['saving_with_small']:.3f}"
    )
    h = result["headline"]
    lines.append(
        f"headline (largest budget, {len(h['saving_with_small_per_seed'])} seeds): saving with small "
        f"{h['saving_with_small']:.3f} ± {h['saving_with_small_spread']:.3f}, without "
        f"{h['saving_without_small']:.3f} ± {h['saving_without_small_spread']:.3f}, loss gap "
        f"{h['loss_gap_at_equal_flops']:+.4f}, wall {h['wall_ratio']:.2f}x"
    )
    return lines


def ablation_lines(result: dict) -> list[str]:
    return [
        f"{result['ablation']} / {arm['arm']}: loss {arm['loss']:.4f}, saving with small "
        f"{arm['saving_with_small']:.3f}, without {arm['saving_without_small']:.3f}, gap "
        f"{arm['loss_gap_at_equal_flops']:+.4f}, wall {arm['wall_ratio']:.2f}x"
        for arm in result["arms"]
    ]


def plot(result: dict, path: Path) -> None:
    fig, (ax,) = figure(1, width=8, height=5)
    for index, (_seed, data) in enumerate(result["seeds"].items()):
        alpha, first = (1.0, True) if index == 0 else (0.35, False)
        budgets = data["scratch"]["budgets"]
        ax.plot(
            [b["flops"] for b in budgets],
            [b["loss"] for b in budgets],
            "o-",
            color="C0",
            alpha=alpha,
            label="large from scratch (completed schedules)" if first else None,
        )
        for b in budgets:
            run = b["run"]
            per_step = b["flops"] / b["steps"]
            ax.plot(
                [s * per_step for s, _ in run["val"]],
                [v for _, v in run["val"]],
                color="C0",
                alpha=0.25 * alpha,
                linewidth=0.8,
            )
        for p in data["grown"]:
            color = f"C{1 + sorted(result['protocol']['grown_multiples']).index(p['multiple'])}"
            ax.plot(
                *zip(*p["curve"]),
                color=color,
                alpha=alpha,
                linewidth=1,
                label=f"grown, budget {p['multiple']}x" if first else None,
            )
            ax.plot(p["flops"], p["loss"], "s", color=color, alpha=alpha)
    small = result["small_alone"]
    ax.plot(*zip(*small["curve"]), color="grey", linestyle=":", label="small model alone")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("validation loss")
    h = result["headline"]
    ax.set_title(
        f"growth vs scratch: {h['saving_with_small']:.0%} of the compute saved counting the small model, "
        f"{h['saving_without_small']:.0%} not",
        fontsize=9,
    )
    losses = [b["loss"] for d in result["seeds"].values() for b in d["scratch"]["budgets"]]
    ax.set_ylim(min(losses + [small["loss"]]) - 0.1, max(losses) + 0.6)
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=120)


def plot_ablation(result: dict, scratch_budgets: list[dict], path: Path) -> None:
    fig, (ax,) = figure(1, width=8, height=5)
    ax.plot(
        [b["flops"] for b in scratch_budgets],
        [b["loss"] for b in scratch_budgets],
        "o-",
        color="black",
        label="large from scratch",
    )
    for k, arm in enumerate(result["arms"]):
        ax.plot(
            *zip(*arm["curve"]),
            color=f"C{k}",
            linewidth=1,
            label=f"{arm['arm']} (saves {arm['saving_with_small']:.0%})",
        )
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("validation loss")
    losses = [b["loss"] for b in scratch_budgets] + [a["loss"] for a in result["arms"]]
    ax.set_ylim(min(losses) - 0.1, max(losses) + 0.8)
    ax.set_title(
        f"ablation: {result['ablation']} (budget {result['multiple']}x, seed {result['seed']})", fontsize=9
    )
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=120)
