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


def command_line(script: str) -> str:
    """This process's command as a reader would type it again: `nice -n N` only when it runs niced."""
    import os
    import sys

    niceness = os.nice(0)
    return (f"nice -n {niceness} " if niceness else "") + " ".join([".venv/bin/python", script, *sys.argv[1:]])


def save_tiny_bert(path, *, layers: int, heads: int, max_positions: int, dropout: float = 0.1,
                   seed: int = 0) -> Path:
    """A randomly initialized BertModel (hidden size 32, FFN 64; weights from `torch.manual_seed(seed)`)
    with the bundled MiniLM's WordPiece tokenizer, saved to `path`: a model of a real class that
    costs little, for benchmarks and tests that exercise everything around the model."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pipeline.model_files import resolve_model_dir

    # the bundled all-MiniLM-L6-v2's folder (the `demo` extra), as the model layer finds it offline
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2", "main")[0])
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers,
                         num_attention_heads=heads, intermediate_size=64, max_position_embeddings=max_positions,
                         hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout),
              add_pooling_layer=False).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)
