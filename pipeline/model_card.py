"""Model cards: a Hugging Face hub README.md in every exported student folder (<run>/model).

The card is rendered from what a training output already holds, so it can be redrawn at any time:
config.json (the resolved stage config: Table 6 settings actually used), metrics.jsonl (steps, last
loss), model/mimo_training.json (teacher fingerprint, time and hardware, written at export),
model/mimo_eval.json (the latest `mimo eval` that covered the model, written by the eval), and the
prepared tables (languages, data sets, counts). YAML front matter as the hub reads it: library_name, pipeline_tag, language,
base_model, datasets, license (the base model's), tags.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path

from pipeline import prepared_layout as layout
from pipeline.errors import MimoError
from pipeline.model_files import E5_SMALL
from pipeline.ranks import torchrun_world

# licenses of the students this project trains (their hub model cards); others: a local folder's card, else "other"
BASE_LICENSES = {"xlm-roberta-large": "mit", "FacebookAI/xlm-roberta-large": "mit", "xlm-roberta-base": "mit",
                 "FacebookAI/xlm-roberta-base": "mit", "jhu-clsp/mmBERT-base": "mit", E5_SMALL: "mit"}
TABLE6 = ("lr", "batch_size", "mini_batch_size", "max_length", "epochs", "warmup_ratio", "weight_decay", "max_grad_norm",
          "scale", "precision", "seed")
TRAINING, EVAL = "mimo_training.json", "mimo_eval.json"  # inside the model folder: they travel with it to the hub


def _json(path: Path, default=None):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def front_matter(text: str) -> dict:
    """The simple `key: value` / `key: [a, b]` / `- item` fields of a README's YAML front matter."""
    if not text.startswith("---\n") or "\n---" not in text[4:]:
        return {}
    out: dict = {}
    key = None
    for line in text[4:text.index("\n---", 4)].splitlines():
        if line.startswith(("- ", "  - ")) and key:
            out.setdefault(key, []).append(line.split("- ", 1)[1].strip().strip("'\""))
        elif ":" in line and not line.startswith(" "):
            key, value = (part.strip() for part in line.split(":", 1))
            value = value.strip("'\"")
            if value.startswith("[") and value.endswith("]"):
                out[key] = [v.strip().strip("'\"") for v in value[1:-1].split(",") if v.strip()]
            elif value:
                out[key] = value
    return out


def hardware(device) -> str:
    """What the run trained on, e.g. `2 x NVIDIA H100 80GB HBM3` or `CPU (16 threads, x86_64)`."""
    import torch

    world = torchrun_world()[1]
    if getattr(device, "type", str(device)) == "cuda":
        return f"{world} x {torch.cuda.get_device_name(device)}"
    return f"CPU ({torch.get_num_threads()} threads, {platform.machine()})" + (f" x {world}" if world > 1 else "")


def fingerprint_digest(fingerprint: dict) -> str:
    return hashlib.blake2b(json.dumps(fingerprint, sort_keys=True).encode(), digest_size=8).hexdigest()


def write_training_card(run_dir: str | Path, result: dict, teacher_fingerprint: dict, device) -> Path:
    """At export: record the training facts the config does not hold (mimo_training.json), then write the card."""
    run_dir = Path(run_dir)
    record = {"steps": result.get("step"), "final_loss": result.get("loss"), "seconds": result.get("seconds"),
              "steps_in_last_invocation": result.get("steps_run"), "hardware": hardware(device),
              "finished_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "teacher": teacher_fingerprint}
    (run_dir / "model" / TRAINING).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return write_model_card(run_dir)


def record_eval(run_dir: str | Path, rows: list[dict], eval_dir: str | Path) -> Path | None:
    """After `mimo eval`: keep its figures for this model (mimo_eval.json) and redraw the card."""
    run_dir = Path(run_dir)
    if not (run_dir / "model" / "config.json").is_file() or not (run_dir / "config.json").is_file():
        return None  # not a training output of this tool: no card to update
    keep = ("benchmark", "setting", "metric", "main", "ndcg@10", "ndcg@20", "recall@20", "mrc_mean", "queries")
    record = {"eval_dir": str(eval_dir), "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "results": [{k: r[k] for k in keep if k in r} for r in rows]}
    (run_dir / "model" / EVAL).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return write_model_card(run_dir)


def write_model_card(run_dir: str | Path, repo_id: str = "") -> Path:
    """(Re)write <run_dir>/model/README.md; `repo_id`: the hub repository the usage snippet loads."""
    run_dir = Path(run_dir)
    if not (run_dir / "model").is_dir():
        raise MimoError(f"{run_dir}: no exported model/ folder to write a model card into")
    path = run_dir / "model" / "README.md"
    path.write_text(render_card(run_dir, repo_id), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------
# what the card says


def _stage(cfg: dict) -> str:
    return cfg.get("_step", "stage1")


def _base_model(cfg: dict, seen=()) -> str:
    """The hub id training started from: the student setting, or (Stage 2 from a Stage-1 output) that one's."""
    if _stage(cfg) == "stage2" and cfg.get("init") and cfg["init"] not in seen:
        init_cfg = _json(Path(cfg["init"]) / "config.json", {})
        if init_cfg:
            return _base_model(init_cfg, (*seen, cfg["init"]))
    student = cfg.get("student", "")
    if Path(student).is_dir():  # a local folder: its own card may name its base
        return front_matter(_read(Path(student) / "README.md")).get("base_model", "")
    return student


def _license(base: str) -> str:
    if base in BASE_LICENSES:
        return BASE_LICENSES[base]
    return "other"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _table_facts(cfg: dict) -> dict:
    """Languages, rows and hub data sets of the prepared table this run trained on."""
    import pyarrow.parquet as pq

    prepared = Path(cfg.get("prepared", ""))
    prep_cfg = _json(prepared / "config.json", {})
    if _stage(cfg) == "stage1":
        table_path, lang_cols = layout.stage1_pairs(prepared), ("lang",)
    else:
        comp = layout.METHOD_COMPOSITION.get(cfg.get("method"), "mimo")
        table_path, lang_cols = layout.stage2_table(prepared, comp), ("q_lang", "p_lang")
    facts = {"rows": None, "languages": set(), "datasets": [], "source": ""}
    try:
        names = pq.read_schema(table_path).names
        cols = [c for c in (*lang_cols, "source") if c in names]
        table = pq.read_table(table_path, columns=cols)
    except (OSError, ValueError):
        return facts
    facts["rows"] = table.num_rows
    for col in lang_cols:
        if col in table.column_names:
            facts["languages"] |= set(table.column(col).unique().to_pylist())
    stage_prep = prep_cfg.get(_stage(cfg), {})
    facts["source"] = stage_prep.get("source", "")
    if facts["source"] == "hub":
        if "source" in table.column_names:  # the hub data sets the pairs actually came from
            facts["datasets"] = sorted(s for s in table.column("source").unique().to_pylist() if "/" in s)
        elif stage_prep.get("hub_id"):
            facts["datasets"] = [stage_prep["hub_id"]]
    return facts


def _number(value, scale: float, digits: int) -> str:
    return f"{scale * value:.{digits}f}" if isinstance(value, (int, float)) else ""


def _chain(cfg: dict) -> list[dict]:
    """This run's config, preceded by its Stage-1 init's (Stage 2 from a Stage-1 output)."""
    out = [cfg]
    if _stage(cfg) == "stage2" and cfg.get("init"):
        init_cfg = _json(Path(cfg["init"]) / "config.json")
        if init_cfg and init_cfg.get("_step") == "stage1":
            out.insert(0, init_cfg)
    return out


def _describe(cfg: dict) -> str:
    if _stage(cfg) == "stage1":
        return "Stage 1: distillation `1 - cos(psi(E_s(t_XX)), E_t(t_en))` on parallel sentences"
    method = cfg.get("method", "mimo")
    if method == "mimo":
        return f"Stage 2 (MIMO): `{cfg.get('lam')} * XLCO + {1 - cfg.get('lam', 0):g} * Distill`, lambda = {cfg.get('lam')}"
    if method == "lakda":
        return f"Stage 2 baseline LaKDA: `(1 - alpha) * InfoNCE + alpha * KL`, alpha = {cfg.get('alpha')}"
    return f"Stage 2 baseline {method.upper() if method == 'xlco' else 'InfoNCE'}"


def render_card(run_dir: Path, repo_id: str = "") -> str:
    cfg = _json(run_dir / "config.json")
    if not cfg:
        raise MimoError(f"{run_dir}: no config.json: not a training output")
    training = _json(run_dir / "model" / TRAINING, {})
    evaluated = _json(run_dir / "model" / EVAL)
    chain = _chain(cfg)
    facts = [_table_facts(c) for c in chain]
    base = _base_model(cfg)
    languages = sorted(set().union(*(f["languages"] for f in facts)) | {"en"})
    datasets = sorted(set().union(*(f["datasets"] for f in facts)))
    teacher = training.get("teacher") or {}

    yaml = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
            "tags:", "- sentence-transformers", "- sentence-similarity", "- feature-extraction", "- mimo",
            "- multilingual", "- knowledge-distillation", "language:", *(f"- {lang}" for lang in languages)]
    if base and not Path(base).exists():
        yaml.append(f"base_model: {base}")
    if datasets:
        yaml += ["datasets:", *(f"- {d}" for d in datasets)]
    yaml += [f"license: {_license(base)}", "---", ""]

    name = run_dir.resolve().name
    lines = [f"# {name}: a multilingual retriever trained with the MIMO recipe", "",
             f"A [sentence-transformers](https://www.sbert.net) model: {base or 'a local student'} trained with the "
             "`mimo-retrieval` tool following the MIMO recipe (*MIMO: Multilingual Information Retrieval via "
             "Monolingual Objectives*; the authors' code: https://github.com/yjoonjang/MIMO): an English teacher's "
             f"cached embeddings anchor the multilingual student. {cfg.get('pooling', 'mean').upper()} pooling, no "
             "prompts; compare embeddings by cosine similarity.", "",
             "## Recipe", ""]
    if teacher:
        lines += [f"- Teacher: `{teacher.get('model')}` (revision `{teacher.get('revision')}`, {teacher.get('pooling')} "
                  f"pooling, query prompt {teacher.get('query_prompt')!r}); cache fingerprint "
                  f"`{fingerprint_digest(teacher)}` (the full fingerprint: `{TRAINING}`)"]
    for c, f in zip(chain, facts):
        data = f"{f['rows']} training rows" if f["rows"] is not None else "training rows: unknown"
        where = ", ".join(f["datasets"]) or ("the embedded sample" if f["source"] == "sample" else f["source"] or "?")
        lines.append(f"- {_describe(c)}; {data} from {where}, {len(f['languages'])} languages")
    lines += ["", "Settings actually used (paper Table 6 names; from the resolved `config.json`):", "",
              "| stage | " + " | ".join(k for k in TABLE6) + " |", "|" + " --- |" * (len(TABLE6) + 1)]
    for c in chain:
        lines.append(f"| {_stage(c)} | " + " | ".join(str(c.get(k, "")) for k in TABLE6) + " |")
    lines.append("")
    if training:
        seconds = training.get("seconds")
        took = f"{seconds / 60:.1f} min for the {training.get('steps_in_last_invocation')} steps of the invocation " \
               "that finished it" if seconds is not None else "time not recorded"
        lines += [f"Training: {training.get('steps')} optimizer steps, final loss {training.get('final_loss', 0):.4f}; "
                  f"{took}; hardware: {training.get('hardware')}; finished {training.get('finished_at')}.", ""]
    lines += ["## Evaluation", ""]
    if evaluated and evaluated.get("results"):
        lines += [f"From the latest `mimo eval` that covered this model ({evaluated['at']}, report in "
                  f"`{evaluated['eval_dir']}`):", "",
                  "| benchmark | setting | main metric | score | nDCG@10 | nDCG@20 | Recall@20 | MRC |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in evaluated["results"]:
            cells = [_number(r.get(k), 100, 2) for k in ("main", "ndcg@10", "ndcg@20", "recall@20")]
            lines.append(f"| {r['benchmark']} | {r.get('setting', '')} | {r.get('metric', '')} | " + " | ".join(cells)
                         + f" | {_number(r.get('mrc_mean'), 1, 4)} |")
    else:
        lines.append("Not evaluated yet: `mimo eval` adds its figures here.")
    lines += ["", "## Usage", "", "```python", "from sentence_transformers import SentenceTransformer", "",
              f'model = SentenceTransformer("{repo_id or run_dir / "model"}")',
              'queries = model.encode(["Wie hoch ist der Mount Everest?"], normalize_embeddings=True)',
              'passages = model.encode(["Mount Everest is 8,849 metres high.", "Le Mont Blanc culmine à 4 806 m."],',
              '                        normalize_embeddings=True)', "print(queries @ passages.T)", "```", ""]
    return "\n".join(yaml + lines)


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False, revision: str | None = None,
                token: str | None = None) -> str:
    """Upload an exported student (a training output or its model/ folder) to the hub; return the commit URL.

    The card is redrawn first with `repo_id` in its usage snippet. Needs a token (`hf auth login`,
    HF_TOKEN or `token`) with write access.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    run_dir = folder.parent if (folder / "modules.json").is_file() and (folder.parent / "config.json").is_file() else folder
    model_dir = run_dir / "model" if (run_dir / "model").is_dir() else folder
    if not (model_dir / "modules.json").is_file():
        raise MimoError(f"{folder}: not a sentence-transformers folder or a training output (no modules.json)")
    if (run_dir / "config.json").is_file() and (run_dir / "model").is_dir():
        write_model_card(run_dir, repo_id)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(model_dir), repo_id=repo_id, repo_type="model", revision=revision,
                                 commit_message=f"mimo push: {run_dir.resolve().name}")
    except Exception as err:  # hub errors come in many types; the message is what helps
        raise MimoError(f"push {model_dir} to {repo_id}: {type(err).__name__}: {' '.join(str(err).split())}") from None
    return str(getattr(info, "commit_url", info))
