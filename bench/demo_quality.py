"""The demo's quality over seeds fixed in advance: mean and spread per model, and which orderings hold in how many.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python bench/demo_quality.py                 # seeds 1 2 3 (heavy: ~3 demos)
    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python bench/demo_quality.py --seeds 1 --out work/dq-smoke

Runs `make demo`'s chain (configs/sample.toml) once per seed: prepare and the teacher cache once (they do
not depend on the training seed), then for each seed Stage 1, Stage 2 (MIMO), the InfoNCE / XLCO / LaKDA
baselines, the lambda sweep (reusing the MIMO run for lambda 0.2) and the eval, each in its own folder
`<out>/seed-<N>/` (training `seed=N`; the eval's embeddings of the untrained student and the teacher are
shared, they do not depend on the seed). The seeds are the command line's, chosen before any run: never
pick them after looking at held-out scores. Writes `<out>/quality.md` (and prints it): per model the mean,
standard deviation and range over the seeds of nDCG@20, alignment, uniformity and mean MRC@10 and @20, and for each
ordering of eval/findings.py in how many seeds it holds. A step that fails stops the run with its command.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.findings import orderings  # noqa: E402

MEASURES = (("main", "nDCG@20", 100.0, 2), ("alignment", "alignment", 1.0, 4), ("uniformity", "uniformity", 1.0, 4),
            ("mrc_mean", "MRC@10", 1.0, 2), ("mrc@20", "MRC@20", 1.0, 2))


def seed_config(template: str, work: str, out: Path, seed: int) -> str:
    """The config text with the seed's own work folder (training runs, eval); the teacher row of the
    eval reads the shared cache. Prepared data, teacher cache and eval embeddings are shared by all
    seeds through overrides (`shared_paths`)."""
    text = template.replace(f'work_dir = "{work}"', f'work_dir = "{out}/seed-{seed}"')
    text = text.replace(f'"teacher:{work}/teacher_cache.zarr', f'"teacher:{out}/shared/teacher_cache.zarr')
    return text.replace(f'"{work}/', f'"{out}/seed-{seed}/')


def shared_paths(out: Path, step: str) -> list[str]:
    shared = out / "shared"
    data = [f"prepared={shared}/prepared", f"cache={shared}/teacher_cache.zarr"]
    return {"stage1": data, "stage2": data, "sweep": [f"stage2.{d}" for d in data],
            "eval": [f"embeddings_dir={shared}/embeddings"], "prepare": [f"work_dir={shared}"],
            "teacher-cache": [f"work_dir={shared}"]}[step]


def run(args: list[str], log: Path) -> None:
    cmd = [sys.executable, "-m", "mimo_cli", *args]
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        done = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(args)} (log: {log})")


def chain(config: Path, out: Path, seed_dir: Path, seed: int, log: Path) -> dict:
    c = ["--config", str(config)]
    run(["stage1", *c, *shared_paths(out, "stage1"), f"seed={seed}"], log)
    run(["stage2", *c, *shared_paths(out, "stage2"), f"seed={seed}"], log)
    for method in ("infonce", "xlco", "lakda"):
        run(["stage2", *c, *shared_paths(out, "stage2"), f"method={method}", "init=", f"seed={seed}"], log)
    run(["sweep", *c, *shared_paths(out, "sweep"), f"stage2.seed={seed}"], log)
    run(["eval", *c, *shared_paths(out, "eval"), f"sweep_dir={seed_dir}/sweep"], log)
    return json.loads((seed_dir / "eval" / "results.json").read_text(encoding="utf-8"))


def spread(values: list[float], scale: float, digits: int) -> str:
    if not values:
        return "–"
    v = [scale * x for x in values]
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):.{digits}f} ± {sd:.{digits}f} ({min(v):.{digits}f}–{max(v):.{digits}f})"


def table(summaries: dict[int, dict]) -> list[str]:
    seeds = sorted(summaries)
    first = summaries[seeds[0]]
    bench = first["benchmarks"][0]["name"]
    lines = [f"Seeds {', '.join(map(str, seeds))} (fixed before the runs); {bench}: "
             f"{first['benchmarks'][0]['queries']} queries, {first['benchmarks'][0]['documents']} documents. "
             "Mean ± standard deviation (min–max) over the seeds.", "",
             "| model | " + " | ".join(name for _, name, _, _ in MEASURES) + " |", "|---|" + "---:|" * len(MEASURES)]
    for model in first["models"]:
        rows = [next((r for r in summaries[s]["results"] if r["model"] == model and r["benchmark"] == bench), None)
                for s in seeds]
        cells = [spread([r[key] for r in rows if r and key in r], scale, digits) for key, _, scale, digits in MEASURES]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    held: dict[str, list[bool]] = {}
    for s in seeds:
        for claim, holds, _ in orderings(summaries[s]):
            held.setdefault(claim, []).append(holds)
    lines += ["", "| ordering (eval/findings.py) | holds in |", "|---|---:|"]
    lines += [f"| {claim} | {sum(h)} of {len(h)} seeds |" for claim, h in held.items()]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--config", default="configs/sample.toml")
    ap.add_argument("--work", default="work/sample", help="the config's work_dir")
    ap.add_argument("--out", default="work/demo-quality")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    template = (ROOT / args.config).read_text(encoding="utf-8")
    log = out / "runs.log"
    summaries = {}
    for i, seed in enumerate(args.seeds):
        config = out / f"seed-{seed}.toml"
        config.write_text(seed_config(template, args.work, out, seed), encoding="utf-8")
        if i == 0:  # prepare and the teacher cache: once, shared
            run(["prepare", "--config", str(config), *shared_paths(out, "prepare")], log)
            run(["teacher-cache", "--config", str(config), *shared_paths(out, "teacher-cache")], log)
        summaries[seed] = chain(config, out, out / f"seed-{seed}", seed, log)
    lines = table(summaries)
    (out / "quality.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
