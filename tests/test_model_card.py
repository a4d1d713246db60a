"""Model cards: Stage 1 and Stage 2 exports get a hub README.md (front matter, recipe, Table 6 settings,
training facts), `mimo eval` writes its figures into it, and `mimo push` uploads the folder (offline:
the hub calls are replaced, everything up to them is real)."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import ModelCard

from eval.encoders import ModelSpec
from eval.run import BenchmarkSpec, EvalConfig, run_eval
from pipeline.cache_read import TeacherTargets
from pipeline.errors import MimoError
from pipeline.model_card import _table_facts, fingerprint_digest, front_matter, push_to_hub
from trainer.stage1 import Stage1Config, run_stage1
from trainer.stage2 import Stage2Config, run_stage2

QUIET = dict(echo=lambda *_: None)


@pytest.fixture(scope="module")
def trained(training_setup, tmp_path_factory):
    """Stage 1 then Stage 2 (MIMO) to the end, from a student folder whose own card names its base model."""
    root = tmp_path_factory.mktemp("cards")
    student = root / "student"
    shutil.copytree(training_setup / "tiny-student", student)
    (student / "README.md").write_text("---\nbase_model: xlm-roberta-large\nlicense: mit\n---\n# tiny\n")
    common = dict(prepared=str(training_setup / "prepared"), cache=str(training_setup / "cache.zarr"), max_length=32,
                  progress=False, checkpoint_every=1000, weight_decay=0.01)
    run_stage1(Stage1Config(out_dir=str(root / "stage1"), student=str(student), batch_size=256, **common), **QUIET)
    run_stage2(Stage2Config(out_dir=str(root / "stage2"), init=str(root / "stage1"), batch_size=64, mini_batch_size=32,
                            contrastive_group_size=0,
                            lam=0.3, **common), **QUIET)
    return root


def test_exports_carry_a_hub_model_card(trained, training_setup):
    for stage in ("stage1", "stage2"):
        text = (trained / stage / "model" / "README.md").read_text()
        data = ModelCard(text).data.to_dict()  # the hub's own parser
        assert data["library_name"] == "sentence-transformers" and data["pipeline_tag"] == "sentence-similarity"
        assert data["language"] == ["de", "en", "ja"]
        assert data["base_model"] == "xlm-roberta-large" and data["license"] == "mit"
        assert "datasets" not in data  # the embedded sample is no hub data set
        fingerprint = TeacherTargets(str(training_setup / "cache.zarr")).fingerprint
        assert f"`{fingerprint_digest(fingerprint)}`" in text and "sentence-transformers/all-MiniLM-L6-v2" in text
        training = json.loads((trained / stage / "model" / "mimo_training.json").read_text())
        assert training["teacher"] == fingerprint and training["hardware"].startswith("CPU")
        last = json.loads((trained / stage / "metrics.jsonl").read_text().splitlines()[-1])
        assert training["steps"] == last["step"] and f"final loss {last['loss']:.4f}" in text
        assert "Not evaluated yet" in text and 'SentenceTransformer("' in text
    stage2 = (trained / "stage2" / "model" / "README.md").read_text()
    rows = pq.read_table(training_setup / "prepared/stage2/mimo.parquet").num_rows
    assert f"Stage 2 (MIMO): `0.3 * XLCO + 0.7 * Distill`, lambda = 0.3; {rows} training rows from the embedded sample" in stage2
    # Table 6 as used: both stages of the chain, in order
    assert "| stage1 | 0.0001 | 256 |  | 32 | 1 | 0.1 | 0.01 | 1.0 |  | auto | 42 |" in stage2
    assert "| stage2 | 2e-05 | 64 | 32 | 32 | 1 | 0.1 | 0.01 | 1.0 | 20.0 | auto | 42 |" in stage2


def test_eval_writes_its_figures_into_the_card(trained, tmp_path, monkeypatch):
    cfg = EvalConfig(out_dir=str(tmp_path / "eval"), embeddings_dir=str(tmp_path / "emb"), plots=False,
                     models=(ModelSpec(name="MIMO", model=str(trained / "stage2")),),
                     benchmarks=(BenchmarkSpec("sample", languages=("en", "de", "ja")),))
    row = run_eval(cfg, **QUIET)["results"][0]
    text = (trained / "stage2" / "model" / "README.md").read_text()
    assert "Not evaluated yet" not in text and str(tmp_path / "eval") in text
    assert (f"| sample | mlir | ndcg@20 | {100 * row['main']:.2f} | {100 * row['ndcg@10']:.2f} | "
            f"{100 * row['ndcg@20']:.2f} | {100 * row['recall@20']:.2f} | {row['mrc_mean']:.4f} |") in text
    assert "Not evaluated yet" in (trained / "stage1" / "model" / "README.md").read_text()  # not in this eval
    # the card is no part of the model's identity: a second eval reads every embedding from its cache
    from pipeline.teacher import TransformersTeacher

    monkeypatch.setattr(TransformersTeacher, "encode", lambda *a, **k: pytest.fail("encoded again"))
    assert run_eval(cfg, **QUIET)["results"][0]["main"] == row["main"]


def test_hub_data_sets_come_from_the_pairs_sources(tmp_path):
    prepared = tmp_path / "prepared"
    (prepared / "stage1").mkdir(parents=True)
    (prepared / "config.json").write_text(json.dumps({"_step": "prepare", "stage1": {"source": "hub"}}))
    pq.write_table(pa.table({"lang": ["de", "ja", "de"], "source": ["sentence-transformers/parallel-sentences-talks",
                                                                    "sentence-transformers/parallel-sentences-tatoeba",
                                                                    "sentence-transformers/parallel-sentences-talks"]}),
                   prepared / "stage1" / "pairs.parquet")
    facts = _table_facts({"_step": "stage1", "prepared": str(prepared)})
    assert facts["rows"] == 3 and facts["languages"] == {"de", "ja"}
    assert facts["datasets"] == ["sentence-transformers/parallel-sentences-talks",
                                 "sentence-transformers/parallel-sentences-tatoeba"]
    assert front_matter("---\nlanguage: [en, de]\ntags:\n- a\n- 'b'\n---\n") == {"language": ["en", "de"], "tags": ["a", "b"]}


def test_push_uploads_the_model_folder_with_its_card(trained, monkeypatch):
    import huggingface_hub
    from typer.testing import CliRunner

    from mimo_cli.main import app

    calls = []

    class Commit:
        commit_url = "https://huggingface.co/me/mimo-tiny/commit/abc"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))

    def upload_folder(self, folder_path, repo_id, **kw):
        from pathlib import Path

        calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir()),
                      (Path(folder_path) / "README.md").read_text()))
        return Commit()

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    result = CliRunner().invoke(app, ["push", str(trained / "stage2"), "me/mimo-tiny", "--private"])
    assert result.exit_code == 0, result.output
    assert "commit/abc" in result.output
    assert calls[0] == ("create", "me/mimo-tiny", {"repo_type": "model", "private": True, "exist_ok": True})
    _, repo, files, card = calls[1]
    assert {"README.md", "modules.json", "config.json", "model.safetensors", "mimo_training.json"} <= set(files)
    assert 'SentenceTransformer("me/mimo-tiny")' in card
    push_to_hub(trained / "stage2" / "model", "me/other")  # the model/ folder itself works too
    assert calls[-1][1] == "me/other"
    with pytest.raises(MimoError, match="no modules.json"):
        push_to_hub(trained, "me/x")
