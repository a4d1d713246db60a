"""MTEB bridge (optional extra `mteb`): evaluate a trained student with `mteb`'s own API.

    import mteb
    from eval.mteb_bridge import load_student_for_mteb

    model = load_student_for_mteb("work/paper/stage2-mimo")          # a training output or any ST folder / hub id
    task = mteb.get_task("MIRACLRetrieval", languages=["deu", "jpn"])  # MIRACL, as the paper
    results = mteb.evaluate(model, task, cache=mteb.ResultCache("work/paper/mteb"))

`benchmark_task` turns any benchmark `mimo eval` loads (the sample, local folders, the hub
loaders) into an MTEB retrieval task, so MTEB scores the same queries, corpus and qrels: an MLIR
benchmark is one subset with its mixed-language corpus, a monolingual one a subset per language
(each query searches its own language's documents, as MIRACL in MTEB).
"""

from __future__ import annotations

from pathlib import Path

from eval.benchmark import Benchmark
from pipeline.extras import require

MTEB_PURPOSE = "evaluating on MTEB tasks"


def load_student_for_mteb(model: str, query_prompt: str = "", document_prompt: str = "", device: str | None = None):
    """A SentenceTransformer for `mteb.evaluate`: a training output's model/, a sentence-transformers
    folder or a hub id; the prompts go to queries and documents (mteb's prompt types)."""
    from sentence_transformers import SentenceTransformer

    path = Path(model)
    if (path / "model" / "config.json").is_file():  # a training output of this tool
        path = path / "model"
    prompts = {k: v for k, v in (("query", query_prompt), ("document", document_prompt)) if v}
    return SentenceTransformer(str(path) if path.exists() else model, device=device, prompts=prompts or None)


def benchmark_task(bench: Benchmark, split: str = "test"):
    """An mteb AbsTaskRetrieval holding `bench` (queries, corpus, graded qrels) in memory."""
    require("mteb", "mteb", "mteb", MTEB_PURPOSE)
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata

    def split_data(q_rows, d_rows) -> RetrievalSplitData:
        qids = [bench.query_ids[i] for i in q_rows]
        return RetrievalSplitData(
            queries=Dataset.from_dict({"id": qids, "text": [bench.query_texts[i] for i in q_rows]}),
            corpus=Dataset.from_dict({"id": [bench.doc_ids[i] for i in d_rows], "text": [bench.doc_texts[i] for i in d_rows]}),
            relevant_docs={q: dict(bench.qrels.get(q, {})) for q in qids}, top_ranked=None)

    langs = sorted(set(bench.query_langs))
    if bench.setting == "mlir":
        subsets = {"default": split_data(range(len(bench.query_ids)), range(len(bench.doc_ids)))}
    else:
        subsets = {lang: split_data([i for i, x in enumerate(bench.query_langs) if x == lang],
                                    [i for i, x in enumerate(bench.doc_langs) if x == lang]) for lang in langs}
    eval_langs = [_bcp47(x) for x in langs]
    metadata = TaskMetadata(
        name=f"mimo-{bench.name}", description=f"{bench.name} ({bench.setting}) as loaded by mimo eval: {bench.source}",
        reference=None, dataset={"path": f"local/{bench.name}", "revision": bench.digest("document")[:12]},
        type="Retrieval", category="t2t", modalities=["text"], eval_splits=[split],
        eval_langs=eval_langs if bench.setting == "mlir" else {lang: [_bcp47(lang)] for lang in langs},
        main_score="ndcg_at_10", date=None, domains=None, task_subtypes=None, license=None, annotations_creators=None,
        dialect=None, sample_creation=None, bibtex_citation="")

    class MimoBenchmarkTask(AbsTaskRetrieval):
        def load_data(self, num_proc=None, **kwargs):
            self.dataset = {subset: {split: data} for subset, data in subsets.items()}
            self.data_loaded = True

    MimoBenchmarkTask.metadata = metadata
    return MimoBenchmarkTask()


# the benchmark languages this project uses, as MTEB's "iso639-3-Script" codes
SCRIPTS = {"en": "eng-Latn", "de": "deu-Latn", "es": "spa-Latn", "fr": "fra-Latn", "it": "ita-Latn", "pt": "por-Latn",
           "nl": "nld-Latn", "ru": "rus-Cyrl", "zh": "zho-Hans", "ja": "jpn-Jpan", "ko": "kor-Kore", "ar": "ara-Arab",
           "hi": "hin-Deva", "vi": "vie-Latn", "id": "ind-Latn", "th": "tha-Thai", "tr": "tur-Latn", "fa": "fas-Arab",
           "fi": "fin-Latn", "sw": "swa-Latn", "te": "tel-Telu", "bn": "ben-Beng", "yo": "yor-Latn", "pl": "pol-Latn",
           "el": "ell-Grek", "ro": "ron-Latn", "he": "heb-Hebr", "da": "dan-Latn", "sv": "swe-Latn", "cs": "ces-Latn"}


def _bcp47(lang: str) -> str:
    # task metadata only (MTEB checks the code's form): the scores never depend on it
    return SCRIPTS.get(lang, "eng-Latn")


def ndcg_at_10(result, task_name: str) -> dict[str, float]:
    """nDCG@10 per subset from an mteb ModelResult (the `ndcg_at_10` of each test split score)."""
    task = next(t for t in result.task_results if t.task_name == task_name)
    return {s["hf_subset"]: float(s["ndcg_at_10"]) for split in task.scores.values() for s in split}
