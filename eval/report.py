"""The eval report: a Markdown table (data sets x models, like the paper's Tables 2, 3 and 8), the
same figures as CSV (one measure a row) and JSON (everything), and the PNG plots of eval/plots.py.

Scores in the tables are x100, as in the paper. The MLIR average is taken over the MLIR data sets
only; MIRACL (monolingual, nDCG@10) stands in its own column, as Table 4 does.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from eval import plots
from eval.findings import what_this_shows


def _cell(value, scale: float = 100.0, digits: int = 2) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{scale * value:.{digits}f}"


def _by(results: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["model"], r["benchmark"]): r for r in results}


def mlir_average(summary: dict, model: str) -> float | None:
    found = _by(summary["results"])
    scores = [found[(model, b["name"])]["main"] for b in summary["benchmarks"]
              if b["setting"] == "mlir" and (model, b["name"]) in found]
    return sum(scores) / len(scores) if scores else None


def main_table(summary: dict) -> list[str]:
    found = _by(summary["results"])
    benches = summary["benchmarks"]
    mlir = [b for b in benches if b["setting"] == "mlir"]
    columns = [f"{b['name']} ({len(b['languages'])})" for b in benches] + (["MLIR avg"] if len(mlir) > 1 else [])
    table = {m: [found[(m, b["name"])]["main"] if (m, b["name"]) in found else None for b in benches]
             + ([mlir_average(summary, m)] if len(mlir) > 1 else []) for m in summary["models"]}
    best = [max((v[i] for v in table.values() if v[i] is not None), default=None) for i in range(len(columns))]
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for model, values in table.items():
        cells = [f"**{_cell(v)}**" if v is not None and v == best[i] and len(table) > 1 else _cell(v)
                 for i, v in enumerate(values)]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    metrics = ", ".join(sorted({f"{b['metric']} ({b['setting']})" for b in benches}))
    return lines + ["", f"Main metric: {metrics}; x100; best per column in bold."]


def detail_table(summary: dict) -> list[str]:
    lines = ["| data set | model | nDCG@10 | nDCG@20 | Recall@20 | Recall@depth | MRR@10 | index recall | encode s | search s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary["results"]:
        deep = next((v for k, v in r.items() if k.startswith("recall@") and k != "recall@20"), r["recall@20"])
        lines.append(f"| {r['benchmark']} | {r['model']} | {_cell(r['ndcg@10'])} | {_cell(r['ndcg@20'])} | "
                     f"{_cell(r['recall@20'])} | {_cell(deep)} | {_cell(r['mrr@10'])} | {_cell(r.get('index_recall'))} | "
                     f"{r['encode_s']:.1f} | {r['search_s']:.2f} |")
    return lines


def analysis_table(summary: dict) -> list[str]:
    rows = [r for r in summary["results"] if "uniformity" in r]
    if not rows:
        return []
    lines = ["| data set | model | alignment | uniformity |", "|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['benchmark']} | {r['model']} | {_cell(r.get('alignment'), 1, 4)} | {_cell(r['uniformity'], 1, 4)} |")
    return lines + ["", "Alignment: mean squared distance between translations (lower = better); uniformity: "
                        "log mean exp(-2 ||x - y||^2) over corpus pairs (lower = better)."]


def fairness_table(summary: dict) -> list[str]:
    """MRC@k per query language and PEER@k, for the benchmarks that support them (the release's figures)."""
    rows = [r for r in summary["results"] if "mrc" in r or "peer" in r]
    if not rows:
        return []
    k = summary.get("mrc_k", 10)
    more = [f"mrc@{m}" for m in summary.get("mrc_more_ks", [])]
    peers = [f"peer@{p}" for p in summary.get("peer_ks", [])]
    langs = sorted({lang for r in rows for lang in r.get("mrc", {})})
    lines = [f"| data set | model | MRC@{k} | " + "".join(f"MRC@{m[4:]} | " for m in more)
             + "".join(f"PEER@{p[5:]} | " for p in peers)
             + " | ".join(f"MRC {lang}" for lang in langs) + (" |" if langs else ""),
             "|---|---|---:|" + "---:|" * (len(more) + len(peers) + len(langs))]
    for r in rows:
        mrc = r.get("mrc", {})
        lines.append(f"| {r['benchmark']} | {r['model']} | {_cell(r.get('mrc_mean'), 1)} | "
                     + "".join(f"{_cell(r.get(m), 1)} | " for m in more)
                     + "".join(f"{_cell(r.get(p), 1, 3)} | " for p in peers)
                     + " | ".join(_cell(mrc.get(lang), 1) for lang in langs) + (" |" if langs else ""))
    return lines + ["", f"MRC@{k}: Spearman correlation of the similarity scores that two translations of a query give "
                        f"the union of their top {k}, averaged over the other languages and the queries, x100 "
                        "(higher = more consistent; per query language in the MRC columns"
                        + (", the other cut-offs' in results.csv" if more else "") + "). PEER@k: mean Kruskal-Wallis p-value of the relevant documents' "
                        "ranks (past k: k + 1) grouped by document language, over queries with relevant documents in "
                        "two or more languages (higher = fairer). Per query language in results.csv and results.json."]


def write_csv(summary: dict, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["model", "benchmark", "setting", "measure", "language", "value"])
        for r in summary["results"]:
            for key, value in r.items():
                if isinstance(value, float) and key not in ("lam",):
                    writer.writerow([r["model"], r["benchmark"], r["setting"], key, "all", f"{value:.6f}"])
            for lang, values in r["per_language"].items():
                for key, value in values.items():
                    writer.writerow([r["model"], r["benchmark"], r["setting"], key, lang, f"{value:.6f}"])
            for lang, value in r.get("mrc", {}).items():
                writer.writerow([r["model"], r["benchmark"], r["setting"], f"mrc@{summary.get('mrc_k', 10)}", lang, f"{value:.6f}"])
            for measure, values in [*r.get("mrc_more", {}).items(), *r.get("peer", {}).items()]:  # mrc@k, peer@k per language
                for lang, value in values.items():
                    writer.writerow([r["model"], r["benchmark"], r["setting"], measure, lang, f"{value:.6f}"])


def draw(summary: dict, out: Path) -> dict[str, Path]:
    """The PNG plots that the results support; each is skipped (and said so) when they do not."""
    drawn, notes = {}, []
    results = summary["results"]
    bars = {}
    for r in results:
        bars.setdefault(r["model"], {})[r["benchmark"]] = 100 * r["main"]
    drawn["bars"] = plots.dataset_bars(bars, out / "scores_per_dataset.png", metric="main metric (x100)")
    analysed = [r for r in results if "alignment" in r]
    if analysed:
        bench = analysed[0]["benchmark"]
        points = {r["model"]: (r["alignment"], r["uniformity"]) for r in analysed if r["benchmark"] == bench}
        drawn["alignment_uniformity"] = plots.alignment_uniformity_scatter(
            points, out / "alignment_uniformity.png", title=f"Alignment vs uniformity ({bench})")
    with_mrc = [r for r in results if "mrc" in r]
    if with_mrc:  # Figure 4: the analysis benchmark's (Belebele's) MRC if it has one, else the first with MRC
        bench = ([r["benchmark"] for r in analysed if "mrc" in r] or [r["benchmark"] for r in with_mrc])[0]
        mrc = {r["model"]: r["mrc"] for r in with_mrc if r["benchmark"] == bench}
        try:
            drawn["mrc_radar"] = plots.mrc_radar(mrc, out / "mrc_radar.png", title=f"MRC@{summary.get('mrc_k', 10)} per query language ({bench})")
        except ValueError as err:
            notes.append(f"no MRC radar: {err}")
    lambdas = summary.get("lambdas", {})
    if len(lambdas) >= 2:
        curve = {lam: mlir_average(summary, m) for m, lam in lambdas.items()}
        baselines = {m: mlir_average(summary, m) for m in summary["models"] if m not in lambdas}
        drawn["lambda_curve"] = plots.lambda_curve({k: v for k, v in curve.items() if v is not None},
                                                   out / "lambda_curve.png",
                                                   baselines={k: v for k, v in baselines.items() if v is not None},
                                                   metric="MLIR average (main metric)")
    summary["plot_notes"] = notes
    return drawn


def write_report(summary: dict, out: Path, plots: bool = True) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    drawn = draw(summary, out) if plots else {}
    shows = what_this_shows(summary)  # the paper's orderings, checked on these numbers
    lines = ["# MIMO eval report", "", *shows, *([""] if shows else []), "## Data sets", "",
             "| data set | setting | metric | queries | documents | languages | counted (see below) |",
             "|---|---|---|---:|---:|---|---|"]
    for b in summary["benchmarks"]:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(b["skipped"].items())) or "–"
        setting = b["setting"] + (", release scoring" if b.get("scoring") == "release" else "")
        lines.append(f"| {b['name']} | {setting} | {b['metric']} | {b['queries']} | {b['documents']} | "
                     f"{' '.join(b['languages'])} | {skipped} |")
    lines += ["", "Counted: `qrels_unknown_document` judgments of documents outside the corpus (kept, as trec_eval: "
              "they count in the ideal DCG and recall); `qrels_unknown_query` (dropped); `query_without_judgments` "
              "(not evaluated); `query_without_positive` (evaluated, scores 0, as pytrec_eval); "
              "`qrels_other_language` (monolingual: dropped); with release scoring (binary relevance, as the authors' "
              "scripts): `qrels_unknown_document_dropped`, `query_without_positive_dropped`; loader-specific skips as named.",
              "", "## Retrieval", "", *main_table(summary), "", "## Details", "", *detail_table(summary)]
    fairness = fairness_table(summary)
    if fairness:
        lines += ["", "## Language fairness: MRC and PEER", "", *fairness]
    analysis = analysis_table(summary)
    if analysis:
        lines += ["", "## Alignment and uniformity", "", *analysis]
    if drawn:
        lines += ["", "## Plots", ""] + [f"![{name}]({path.name})" for name, path in drawn.items()]
    lines += [f"- {note}" for note in summary.get("plot_notes", [])]
    paths = {"markdown": out / "report.md", "csv": out / "results.csv", "json": out / "results.json"}
    paths["markdown"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_csv(summary, paths["csv"])
    paths["json"].write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return {**paths, **drawn}
