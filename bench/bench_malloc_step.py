"""What glibc's malloc settings do to a Stage-2-sized CPU step (the environment `make demo`'s jobs run in).

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python bench/bench_malloc_step.py            # ~2 min of CPU, 1 thread

One process per setting (glibc reads MALLOC_* once, at start): e5-small cut to 3 layers with frozen token
embeddings (configs/sample.toml's student), one batch of 64 passages of the sample's training items
(de, ja, fr, ru; max_length 256) on one thread; after a warm-up step, 4 steps of forward, backward (a stand-in
loss: the pooled vectors' squared norm) and AdamW. Reports the steps' user and system CPU seconds
(os.times: this process only). By default glibc serves the batch's activation buffers (>32 MB) by mmap and
returns them at free, so every step faults them in again (system time); raising the mmap and trim
thresholds keeps them in the heap.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "glibc defaults": {},
    "MALLOC_MMAP_THRESHOLD_=MALLOC_TRIM_THRESHOLD_=4 GiB (make demo)": {
        "MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"},
}


def steps() -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    from pipeline.sample import load_sample
    from trainer.student import load_student

    torch.set_num_threads(1)
    torch.manual_seed(0)
    student, tokenizer = load_student("intfloat/multilingual-e5-small", 384, "mean", 3, True)
    student.train()
    sample = load_sample(ROOT / "data/sample")
    texts = [sample.by_id(lang)[i].passage_text(lang) for lang in ("de", "ja", "fr", "ru") for i in sample.ids("train")[:16]]
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)

    def step():
        optimizer.zero_grad(set_to_none=True)
        _, projected = student(batch["input_ids"], batch["attention_mask"])
        projected.pow(2).sum().backward()
        optimizer.step()

    step()
    t0 = os.times()
    for _ in range(4):
        step()
    t1 = os.times()
    print(f"{tuple(batch['input_ids'].shape)} user {t1.user - t0.user:.2f} sys {t1.system - t0.system:.2f}")


def main() -> None:
    if sys.argv[1:] == ["--steps"]:
        return steps()
    print("| setting | user CPU s (4 steps) | system CPU s |\n| --- | ---: | ---: |")
    for name, extra in SETTINGS.items():
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        out = subprocess.run([sys.executable, __file__, "--steps"], env={**env, **extra, "OMP_WAIT_POLICY": "PASSIVE"},
                             capture_output=True, text=True, check=True).stdout.split()
        print(f"| {name} | {out[out.index('user') + 1]} | {out[out.index('sys') + 1]} |")


if __name__ == "__main__":
    main()
