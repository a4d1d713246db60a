"""The report's opening "what this shows" paragraph: which of the paper's orderings hold in these numbers.

The orderings (section 5): Stage 1 + Stage 2 (MIMO) > Stage 1 only > the untrained student;
MIMO >= XLCO; LaKDA > InfoNCE; lambda 0.2 above both 0 and 1 in a sweep; Stage 1 the best
alignment, InfoNCE the best uniformity, MIMO between them; and the language fairness of section 5.5
(Figure 4): MIMO's MRC above XLCO's and LaKDA's, both above InfoNCE's ("severe language bias";
XLCO and LaKDA "improved overall consistency compared to InfoNCE"). Each is checked on the first benchmark
that has every model it needs, and stated with its numbers whether it holds or not; an ordering
whose models are absent is left out. Models are found by their report labels (configs/sample.toml's
names): "student zero-shot" (or "zero-shot"), "Stage 1", "MIMO", "InfoNCE", "XLCO", "LaKDA", and the
sweep's models by their lambda.
"""

from __future__ import annotations

ROLES = {"student": ("student zero-shot", "zero-shot"), "stage1": ("stage 1",), "mimo": ("mimo",),
         "infonce": ("infonce",), "xlco": ("xlco",), "lakda": ("lakda",)}


def _role_of(label: str) -> str | None:
    low = label.lower()
    for role, names in ROLES.items():
        if any(low == n or low.endswith(n) for n in names):
            return role
    return None


def _fmt(value: float, scale: float = 100.0, digits: int = 1) -> str:
    return f"{scale * value:.{digits}f}"


def orderings(summary: dict) -> list[tuple[str, bool, str]]:
    """(claim, holds, evidence) for each ordering whose models are in the summary."""
    out: list[tuple[str, bool, str]] = []
    for bench in summary["benchmarks"]:
        rows = {r["model"]: r for r in summary["results"] if r["benchmark"] == bench["name"]}
        role = {}
        for model in rows:
            found = _role_of(model)
            if found and found not in role and rows[model].get("lam") in (None, 0.2):
                role[found] = model
        main = {k: rows[m]["main"] for k, m in role.items()}
        metric = bench["metric"]

        def chain(names, strict=True):
            if all(n in main for n in names):
                values = [main[n] for n in names]
                holds = all(a > b if strict else a >= b for a, b in zip(values, values[1:]))
                sign = " > " if strict else " >= "
                claim = sign.join(role[n] for n in names)
                out.append((claim, holds, ", ".join(f"{role[n]} {_fmt(main[n])}" for n in names) + f" ({metric})"))

        before = len(out)
        chain(["mimo", "stage1", "student"])
        chain(["mimo", "xlco"], strict=False)
        chain(["lakda", "infonce"])
        sweep = {float(r["lam"]): r["main"] for r in rows.values() if r.get("lam") is not None}
        if {0.0, 0.2, 1.0} <= set(sweep):
            out.append(("lambda 0.2 above lambda 0 and 1", sweep[0.2] > max(sweep[0.0], sweep[1.0]),
                        f"λ=0 {_fmt(sweep[0.0])}, λ=0.2 {_fmt(sweep[0.2])}, λ=1 {_fmt(sweep[1.0])} ({metric})"))
        shape = {k: rows[role[k]] for k in ("stage1", "mimo", "infonce") if k in role}
        if len(shape) == 3 and all("alignment" in r and "uniformity" in r for r in shape.values()):
            a = {k: r["alignment"] for k, r in shape.items()}
            u = {k: r["uniformity"] for k, r in shape.items()}
            holds = a["stage1"] < a["mimo"] < a["infonce"] and u["infonce"] < u["mimo"] < u["stage1"]
            out.append(("alignment-uniformity trade-off (Stage 1 best alignment, InfoNCE best uniformity, MIMO between)",
                        holds, "alignment " + ", ".join(f"{role[k]} {a[k]:.3f}" for k in a)
                        + "; uniformity " + ", ".join(f"{role[k]} {u[k]:.3f}" for k in u) + " (lower = better)"))
        mrc = {k: rows[role[k]]["mrc_mean"] for k in ("mimo", "xlco", "lakda", "infonce")
               if k in role and "mrc_mean" in rows[role[k]]}
        if len(mrc) == 4:
            k = summary.get("mrc_k", 10)
            holds = max(mrc["xlco"], mrc["lakda"]) < mrc["mimo"] and mrc["infonce"] < min(mrc["xlco"], mrc["lakda"])
            out.append((f"MRC@{k}: MIMO above XLCO and LaKDA, both above InfoNCE", holds,
                        ", ".join(f"{role[n]} {mrc[n]:.1f}" for n in mrc) + f" (MRC@{k}, higher = more consistent)"))
        if len(out) > before:
            return [(c, h, f"{e} on {bench['name']}") for c, h, e in out]
    return out


def what_this_shows(summary: dict, scale_note: str = "") -> list[str]:
    """The paragraph (Markdown lines), or [] when no ordering can be checked."""
    found = orderings(summary)
    if not found:
        return []
    bench = next((b for b in summary["benchmarks"] if found[0][2].endswith(f"on {b['name']}")), summary["benchmarks"][0])
    held = [c for c, h, _ in found if h]
    lines = ["## What this shows", "",
             f"On {bench['name']} ({bench['queries']} queries, {bench['documents']} documents, "
             f"{len(bench['languages'])} languages){', ' + scale_note if scale_note else ''}, "
             f"{len(held)} of the {len(found)} orderings the paper reports hold here:", ""]
    lines += [f"- {'holds' if h else '**does not hold**'}: {c} ({e})" for c, h, e in found]
    lines += ["", "One run, one seed: a difference of a point or less on a few hundred queries may not survive "
                  "another seed; the spread across seeds is not measured by this report."]
    return lines
