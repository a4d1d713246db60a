"""The demo's quality over seeds fixed in advance: mean and spread per model, and which orderings hold in how many.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python bench/demo_quality.py                 # seeds 1 2 3 (heavy: ~3 demos)
    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python bench/demo_quality.py --seeds 1 --out work/dq-smoke

Runs `make demo`'s chain (configs/sample.toml) once per seed: prepare and the teacher cache once (they do
not depend on the training seed), then for each seed Stage 1, Stage 2 (MIMO), the InfoNCE / XLCO / LaKDA
baselines, the lambda sweep (reusing the MIMO run for lambda 0.2) and the eval, each in its own folder
`<out>/seed-<N>/` (training `seed=N`; the eval's embeddings of the untrained student and the teacher are
shared, they do not depend on the seed). The seeds are the command line's, chosen before any run: never
pick them after looking at held-out scores. Writes `<out>/quality.md` (and prints it): per model the mean,
standard deviation and range over the seeds of nDCG@20, alignment, uniformity and mean MRC@10, and for each
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
            ("mrc_mean", "MRC@10", 1.0, 2))


def seed_config(template: str, work: str, out: Path, seed: int) -> str:
    """The config text with the seed's own training and eval folders; prepared data, teacher cache and
    the eval's embedding cache shared by all seeds."""
    shared = out / "shared"
    text = template.replace(f'"{work}/prepared', f'"{shared}/prepared')
    text = text.replace(f'"{work}/teacher_cache.zarr', f'"{shared}/teacher_cache.zarr')
    text = text.replace(f'"{work}/eval/embeddings', f'"{shared}/embeddings')
    return text.replace(f'"{work}/', f'"{out}/seed-{seed}/')


def run(args: list[str], log: Path) -> None:
    cmd = [sys.executable, "-m", "pipeline.cli", *args]
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        done = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(args)} (log: {log})")


def chain(config: Path, seed_dir: Path, seed: int, log: Path) -> dict:
    c = ["--config", str(config)]
    run(["stage1", *c, f"seed={seed}"], log)
    run(["stage2", *c, f"seed={seed}"], log)
    for method in ("infonce", "xlco", "lakda"):
        run(["stage2", *c, f"method={method}", "init=", f"out_dir={seed_dir}/stage2-{method}", f"seed={seed}"], log)
    run(["sweep", *c, f"stage2.seed={seed}"], log)
    run(["eval", *c, f"sweep_dir={seed_dir}/sweep"], log)
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
    ap.add_argument("--work", default="work/sample", help="the folder the config's paths start with")
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
            run(["prepare", "--config", str(config)], log)
            run(["teacher-cache", "--config", str(config)], log)
        summaries[seed] = chain(config, out / f"seed-{seed}", seed, log)
    lines = table(summaries)
    (out / "quality.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
