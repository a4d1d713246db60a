"""The eval report's PNG figures, as plain functions over plain Python data.

- `lambda_curve`: Fig. 2, MLIR nDCG@20 against the Stage 2 weight lambda, baselines as dashed lines.
- `alignment_uniformity_scatter`: Figs. 3 and 5, one point per model (lower is better on both axes).
- `mrc_radar`: Fig. 4, MRC@10 (x100) per query language, one closed polygon per model.
- `dataset_bars`: per-dataset scores of each model as grouped bars (the paper's tables as a chart).

matplotlib is imported inside the functions so that importing this module costs nothing. Figures are
built with `matplotlib.figure.Figure` (Agg canvas, no pyplot global state, nothing to close) and a
constrained layout instead of `bbox_inches="tight"`: labels still fit, and every PNG is exactly
FIGSIZE x DPI pixels, which the tests check.
"""

from __future__ import annotations

import math
from pathlib import Path

DPI = 150
FIGSIZE = (6.4, 4.8)  # inches; a PNG is 960 x 720 pixels
RADAR_FIGSIZE = (6.4, 6.4)  # square, so the polar axes are round


def _figure(figsize, **subplot_kw):
    from matplotlib.figure import Figure  # lazy: keeps `import eval.plots` cheap

    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    return fig, fig.add_subplot(**subplot_kw)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    fig.clear()  # a Figure without pyplot is freed with its last reference; drop the artists now
    return path


def _finite(*values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def alignment_uniformity_scatter(points: dict[str, tuple[float, float]], path,
                                 title: str = "Cross-lingual alignment vs uniformity") -> Path:
    """points: model name -> (alignment, uniformity); x = uniformity, y = alignment. NaNs are skipped."""
    kept = {name: (a, u) for name, (a, u) in points.items() if _finite(a, u)}
    if not kept:
        raise ValueError("alignment_uniformity_scatter: no finite points, nothing to plot")
    fig, ax = _figure(FIGSIZE)
    markers = "osD^vP*Xh<>p"
    for i, (name, (align, unif)) in enumerate(kept.items()):  # a legend, not labels: close points overlap
        ax.scatter([unif], [align], s=50, zorder=3, marker=markers[i % len(markers)], label=name)
    ax.margins(0.1)
    ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("Uniformity (lower = better)")
    ax.set_ylabel("Alignment (lower = better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def mrc_radar(mrc: dict[str, dict[str, float]], path, title: str = "MRC@10 per query language") -> Path:
    """mrc: model name -> {query language: MRC x100}. Every model needs a finite value for every
    language of the union, and there must be at least 3 languages (a radar of 2 is a line)."""
    if not mrc:
        raise ValueError("mrc_radar: no models, nothing to plot")
    langs = sorted({lang for scores in mrc.values() for lang in scores})
    if len(langs) < 3:
        raise ValueError(f"mrc_radar: a radar needs at least 3 query languages, got {len(langs)}: {langs}")
    for model, scores in mrc.items():
        for lang in langs:
            if lang not in scores:
                raise ValueError(f"mrc_radar: model {model!r} has no MRC for language {lang!r}")
            if not _finite(scores[lang]):
                raise ValueError(f"mrc_radar: model {model!r} has a non-finite MRC for language {lang!r}")
    angles = [2 * math.pi * i / len(langs) for i in range(len(langs))]
    lowest = min(scores[lang] for scores in mrc.values() for lang in langs)
    highest = max(scores[lang] for scores in mrc.values() for lang in langs)
    fig, ax = _figure(RADAR_FIGSIZE, projection="polar")
    for model, scores in mrc.items():
        values = [scores[lang] for lang in langs]
        ax.plot(angles + angles[:1], values + values[:1], marker="o", markersize=3, label=model)  # closed
    ax.set_xticks(angles, langs)
    ax.set_rlabel_position(180 / len(langs))  # radial tick labels between two spokes, not on one
    # MRC is a Spearman correlation x100: it can go down to -100, never above 100
    ax.set_ylim(min(0.0, 10 * math.floor(lowest / 10)), max(100.0, highest))
    ax.set_title(title)
    ax.legend(loc="upper right", bbox_to_anchor=(1.25, 1.1), fontsize=8)
    return _save(fig, path)


def lambda_curve(curve: dict[float, float], path, baselines: dict[str, float] | None = None,
                 metric: str = "nDCG@20 (MLIR average)",
                 title: str = "Impact of the Stage 2 weight \u03bb") -> Path:
    """curve: lambda -> metric of MIMO trained with that lambda; baselines: name -> metric, drawn as
    dashed horizontal lines (e.g. Stage 1, InfoNCE, XLCO, LaKDA). NaNs are skipped."""
    points = sorted((float(lam), value) for lam, value in curve.items() if _finite(lam, value))
    if not points:
        raise ValueError("lambda_curve: no finite (lambda, metric) points, nothing to plot")
    fig, ax = _figure(FIGSIZE)
    ax.plot([lam for lam, _ in points], [v for _, v in points], marker="o", color="black", label="MIMO")
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
    finite_baselines = [(name, v) for name, v in (baselines or {}).items() if _finite(v)]
    for i, (name, value) in enumerate(finite_baselines):
        ax.axhline(value, linestyle="--", color=colors[i % len(colors)], label=name)
    ax.set_xlabel("\u03bb (weight of the cross-lingual contrastive loss)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def dataset_bars(scores: dict[str, dict[str, float]], path, metric: str = "nDCG@20",
                 title: str = "Scores per dataset") -> Path:
    """scores: model name -> {dataset: metric}. Datasets in first-seen order; a missing or NaN value
    leaves a gap in its group."""
    datasets = list(dict.fromkeys(d for per_model in scores.values() for d in per_model))
    if not any(_finite(v) for per_model in scores.values() for v in per_model.values()):
        raise ValueError("dataset_bars: no finite scores, nothing to plot")
    fig, ax = _figure(FIGSIZE)
    width = 0.8 / len(scores)  # the models of one group share 80% of the unit spacing
    for i, (model, per_model) in enumerate(scores.items()):
        offset = (i - (len(scores) - 1) / 2) * width
        kept = [(j, per_model[d]) for j, d in enumerate(datasets) if d in per_model and _finite(per_model[d])]
        ax.bar([j + offset for j, _ in kept], [v for _, v in kept], width=width, label=model)
    crowded = len(datasets) > 4  # long dataset names overlap when many groups share the axis
    ax.set_xticks(range(len(datasets)), datasets, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
