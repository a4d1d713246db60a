"""Layers point one way: data, store and the model layer (pipeline/) at the bottom; trainer and eval
beside each other above it, never importing each other; the CLI on top. And the encoder's errors
name the role it serves."""

from __future__ import annotations

import ast

import pytest

from pipeline.errors import MimoError
from tests.conftest import REPO


def imported_packages(folder: str) -> dict[str, set[str]]:
    """file -> top-level packages it imports (module level and inside functions)."""
    out = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(REPO))] = names
    return out


@pytest.mark.parametrize("folder, forbidden", [("trainer", {"eval"}), ("eval", {"trainer"})])
def test_trainer_and_eval_do_not_import_each_other(folder, forbidden):
    offenders = {f: sorted(names & forbidden) for f, names in imported_packages(folder).items() if names & forbidden}
    assert not offenders


def test_the_bottom_layer_imports_neither_trainer_nor_eval_only_the_cli_does():
    offenders = {f: sorted(names & {"trainer", "eval", "mimo_cli"}) for f, names in imported_packages("pipeline").items()
                 if names & {"trainer", "eval", "mimo_cli"}}
    assert not offenders
    cli = set().union(*imported_packages("mimo_cli").values())
    assert {"pipeline", "trainer", "eval"} <= cli  # the CLI on top uses every layer below it
    for folder in ("trainer", "eval"):  # and nothing below imports the CLI
        assert not {f for f, names in imported_packages(folder).items() if "mimo_cli" in names}


def test_encoder_errors_name_the_role(tmp_path):
    from pipeline.encoder import Encoder, pick_device
    from pipeline.teacher import TeacherConfig

    with pytest.raises(MimoError, match=r"^eval model 'no-such/model' \(revision main\): cannot load"):
        Encoder(TeacherConfig(model="no-such/model"), role="eval")
    with pytest.raises(MimoError, match=r"^eval\.device 'toaster' is not a device"):
        pick_device("toaster", "eval.device")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MimoError, match=r"^student model .*: cannot load its config or tokenizer"):
        Encoder(TeacherConfig(model=str(tmp_path)), role="student")


def test_auto_attention_is_what_the_model_class_supports(monkeypatch):
    """SDPA where the class has it, eager where it does not: the vectors are the same either way."""
    import numpy as np
    from transformers import BertModel

    from pipeline.encoder import Encoder
    from pipeline.teacher import TeacherConfig

    cfg = TeacherConfig(model="sentence-transformers/all-MiniLM-L6-v2", query_prompt="", device="cpu")
    texts = ["how long to boil an egg", "Boil the eggs for ten minutes."]
    sdpa = Encoder(cfg)
    a = sdpa.encode(texts, ["document"] * 2, [64] * 2)[0]
    monkeypatch.setattr(BertModel, "_supports_sdpa", False)
    eager = Encoder(cfg)
    assert (sdpa.attn_implementation, eager.attn_implementation) == ("sdpa", "eager")
    b = eager.encode(texts, ["document"] * 2, [64] * 2)[0]
    assert eager.model.config._attn_implementation == "eager"
    np.testing.assert_allclose(a, b, atol=1e-5)
