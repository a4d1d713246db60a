"""The report's "what this shows" paragraph: each ordering stated with its numbers, held or not."""

from __future__ import annotations

from eval.findings import orderings, what_this_shows


def _summary(main: dict, lam: dict | None = None, shape: dict | None = None) -> dict:
    results = [{"model": m, "benchmark": "sample", "main": v, "lam": 0.2 if m == "MIMO" else None,
                **(shape or {}).get(m, {})} for m, v in main.items()]
    results += [{"model": f"MIMO λ={k:g}", "benchmark": "sample", "main": v, "lam": k} for k, v in (lam or {}).items()]
    return {"benchmarks": [{"name": "sample", "setting": "mlir", "metric": "ndcg@20", "queries": 560,
                            "documents": 560, "languages": ["en", "de"]}],
            "models": list(main), "results": results}


def test_orderings_hold_or_not_with_their_numbers():
    summary = _summary({"student zero-shot": 0.50, "Stage 1": 0.60, "MIMO": 0.70, "XLCO": 0.72,
                        "InfoNCE": 0.40, "LaKDA": 0.45},
                       lam={0.0: 0.61, 0.2: 0.70, 1.0: 0.72},
                       shape={"Stage 1": {"alignment": 0.1, "uniformity": -1.0},
                              "MIMO": {"alignment": 0.2, "uniformity": -2.0},
                              "InfoNCE": {"alignment": 0.3, "uniformity": -3.0}})
    found = {c: (h, e) for c, h, e in orderings(summary)}
    assert found["MIMO > Stage 1 > student zero-shot"] == (
        True, "MIMO 70.0, Stage 1 60.0, student zero-shot 50.0 (ndcg@20) on sample")
    assert found["MIMO >= XLCO"][0] is False and "XLCO 72.0" in found["MIMO >= XLCO"][1]
    assert found["LaKDA > InfoNCE"][0] is True
    assert found["lambda 0.2 above lambda 0 and 1"][0] is False  # 0.70 < 0.72 at lambda 1
    trade = next(h for c, h, _ in orderings(summary) if c.startswith("alignment-uniformity"))
    assert trade is True
    text = "\n".join(what_this_shows(summary))
    assert "3 of the 5 orderings" in text and "**does not hold**: MIMO >= XLCO" in text
    assert not any(c.startswith("MRC") for c in found)  # no MRC in these rows: no claim


def test_the_mrc_ordering_of_figure_4():
    """MIMO above XLCO and LaKDA, both above InfoNCE, on mrc_mean (negative values compare as numbers)."""
    def claim(mimo, xlco, lakda, infonce):
        summary = _summary({"MIMO": 0.7, "XLCO": 0.6, "LaKDA": 0.6, "InfoNCE": 0.5})
        for r in summary["results"]:
            r["mrc_mean"] = {"MIMO": mimo, "XLCO": xlco, "LaKDA": lakda, "InfoNCE": infonce}[r["model"]]
        return next((h, e) for c, h, e in orderings(summary) if c == "MRC@10: MIMO above XLCO and LaKDA, both above InfoNCE")

    assert claim(-61.3, -62.8, -62.75, -63.1) == (
        True, "MIMO -61.3, XLCO -62.8, LaKDA -62.8, InfoNCE -63.1 (MRC@10, higher = more consistent) on sample")
    assert claim(-62.9, -62.8, -62.75, -63.1)[0] is False  # MIMO below XLCO
    assert claim(-61.3, -63.2, -62.75, -63.1)[0] is False  # XLCO below InfoNCE
    assert claim(-61.3, -62.8, -61.2, -63.1)[0] is False  # LaKDA above MIMO


def test_nothing_to_say_without_the_models():
    assert what_this_shows(_summary({"teacher": 0.3})) == []


def test_the_lambda_ordering_reads_the_mimo_run_the_sweep_reused_for_lambda_0_2():
    """The demo's sweep trains lambda 0 and 1 and reuses the MIMO run (lam 0.2) for 0.2: the three are compared."""
    summary = _summary({"MIMO": 0.70}, lam={0.0: 0.61, 1.0: 0.69})
    found = {c: (h, e) for c, h, e in orderings(summary)}
    assert found["lambda 0.2 above lambda 0 and 1"] == (
        True, "λ=0 61.0, λ=0.2 70.0, λ=1 69.0 (ndcg@20) on sample")
    assert "- holds: lambda 0.2 above lambda 0 and 1 (λ=0 61.0, λ=0.2 70.0, λ=1 69.0" in "\n".join(what_this_shows(summary))
    tie = {c: h for c, h, _ in orderings(_summary({"MIMO": 0.70}, lam={0.0: 0.70, 1.0: 0.50}))}
    assert tie["lambda 0.2 above lambda 0 and 1"] is False  # a tie is not "above"
    # without all three lambdas there is no claim
    assert not any(c.startswith("lambda") for c, _, _ in orderings(_summary({"MIMO": 0.70}, lam={1.0: 0.5})))
