"""A retrieval benchmark in one shape: queries, corpus, graded qrels, and the parallel groups.

Two settings (paper section 4.2):
- `mlir`: one corpus mixing every language; a query must find its positives whatever their
  language (LAReQA style for parallel QA sets: the gold context in every language is positive).
- `monolingual`: per-language corpora (MIRACL); each query searches only its own language's
  documents, and the metric is averaged over languages.

`query_groups` / `doc_groups` list the parallel versions of one query / one document
({lang: id}); MRC@k needs the former, cross-lingual alignment the latter (section 5.4, 5.5).
Every loader ends in `Benchmark.checked()`, so bad input is reported the same way for all sources.

Qrels follow pytrec_eval (the MTEB convention), and what they do is counted in `skipped`:
- `qrels_unknown_document`: judgments of documents not in the corpus are kept, as trec_eval keeps
  them: they count in the ideal DCG and in recall's denominator, and can never be retrieved;
- `qrels_unknown_query`: judgments of queries that do not exist are dropped;
- `query_without_judgments`: queries the qrels do not mention are not evaluated;
- `query_without_positive`: judged queries with no grade > 0 are evaluated and score 0;
- `qrels_other_language` (monolingual only): positives in another language's corpus are dropped.

`Benchmark.release_scoring()` scores as the authors' release does (sentence-transformers'
InformationRetrievalEvaluator on the qrels its scripts build): binary relevance (grade > 0 -> 1),
judgments of documents outside the corpus dropped (`qrels_unknown_document_dropped`), and queries
left without a positive dropped (`query_without_positive_dropped`), so they neither score 0 nor
count in the ideal DCG. The benchmark setting `scoring = "release"` applies it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

from pipeline.errors import MimoError

SETTINGS = {"mlir": "ndcg@20", "monolingual": "ndcg@10"}  # setting -> the paper's main metric


@dataclass
class Benchmark:
    name: str
    setting: str  # "mlir" | "monolingual"
    query_ids: list[str]
    query_texts: list[str]
    query_langs: list[str]
    doc_ids: list[str]
    doc_texts: list[str]
    doc_langs: list[str]
    qrels: dict[str, dict[str, int]]  # qid -> {docid: grade}; grade > 0 is relevant
    query_groups: list[dict[str, str]] = field(default_factory=list)  # {lang: qid}, parallel queries
    doc_groups: list[dict[str, str]] = field(default_factory=list)  # {lang: docid}, parallel documents
    skipped: Counter = field(default_factory=Counter)  # reason -> count (counted skips, reported)
    source: str = ""  # where it came from, for error messages and the report
    scoring: str = "trec_eval"  # trec_eval (graded, as pytrec_eval) or release (see release_scoring)

    @property
    def metric(self) -> str:
        return SETTINGS[self.setting]

    @property
    def languages(self) -> list[str]:
        return sorted(set(self.query_langs) | set(self.doc_langs))

    def digest(self, role: str) -> str:
        """A content hash of the query or document texts (the embedding cache's key)."""
        texts = self.query_texts if role == "query" else self.doc_texts
        h = hashlib.blake2b(digest_size=10)
        for t in texts:
            h.update(t.encode("utf-8"))
            h.update(b"\x00")
        return h.hexdigest()

    def checked(self) -> "Benchmark":
        """Validate ids and qrels; drop (and count) judgments and queries that cannot be evaluated."""
        where = self.source or self.name
        if self.setting not in SETTINGS:
            raise MimoError(f"{where}: setting must be one of {', '.join(SETTINGS)}, not {self.setting!r}")
        if not self.doc_ids:
            raise MimoError(f"{where}: the corpus is empty")
        if not self.query_ids:
            raise MimoError(f"{where}: there are no queries")
        for kind, ids in (("document", self.doc_ids), ("query", self.query_ids)):
            if len(set(ids)) != len(ids):
                dup = next(i for i, c in Counter(ids).items() if c > 1)
                raise MimoError(f"{where}: duplicate {kind} id {dup!r}")
        for kind, texts, ids in (("document", self.doc_texts, self.doc_ids), ("query", self.query_texts, self.query_ids)):
            empty = [i for i, t in zip(ids, texts) if not t or not t.strip()]
            if empty:
                raise MimoError(f"{where}: {kind} {empty[0]!r} has an empty text ({len(empty)} such)")
        docs, queries = set(self.doc_ids), set(self.query_ids)
        qrels: dict[str, dict[str, int]] = {}
        for qid, judged in self.qrels.items():
            if qid not in queries:
                self.skipped["qrels_unknown_query"] += len(judged)
                continue
            self.skipped["qrels_unknown_document"] += sum(1 for d in judged if d not in docs)
            qrels[qid] = {d: int(g) for d, g in judged.items()}
        if not any(d in docs for judged in qrels.values() for d in judged):
            raise MimoError(f"{where}: no qrels entry names a document of the corpus "
                            f"({self.skipped['qrels_unknown_document']} judgments name unknown documents)")
        if self.setting == "monolingual":  # a document of another language's corpus is unreachable there
            lang_of = dict(zip(self.doc_ids, self.doc_langs))
            qlang = dict(zip(self.query_ids, self.query_langs))
            for qid, judged in qrels.items():
                keep = {d: g for d, g in judged.items() if lang_of.get(d, qlang[qid]) == qlang[qid]}
                self.skipped["qrels_other_language"] += len(judged) - len(keep)
                qrels[qid] = keep
        keep = [i for i, q in enumerate(self.query_ids) if qrels.get(q)]
        self.skipped["query_without_judgments"] += len(self.query_ids) - len(keep)
        self.skipped["query_without_positive"] += sum(
            1 for i in keep if not any(g > 0 for g in qrels[self.query_ids[i]].values()))
        if not any(g > 0 and d in docs for judged in qrels.values() for d, g in judged.items()):
            raise MimoError(f"{where}: no query has a relevant document in the corpus")
        if len(keep) < len(self.query_ids):
            kept = set(self.query_ids[i] for i in keep)
            self.query_ids = [self.query_ids[i] for i in keep]
            self.query_texts = [self.query_texts[i] for i in keep]
            self.query_langs = [self.query_langs[i] for i in keep]
            self.query_groups = [{l: q for l, q in g.items() if q in kept} for g in self.query_groups]
        self.qrels = {q: qrels[q] for q in self.query_ids}
        self.skipped = Counter({k: v for k, v in self.skipped.items() if v})
        return self

    def release_scoring(self) -> "Benchmark":
        """Binary relevance over the corpus's documents; queries without a positive there are dropped."""
        docs = set(self.doc_ids)
        outside = sum(1 for judged in self.qrels.values() for d in judged if d not in docs)
        qrels = {q: {d: 1 for d, g in judged.items() if g > 0 and d in docs} for q, judged in self.qrels.items()}
        keep = [i for i, q in enumerate(self.query_ids) if qrels[q]]
        self.skipped.pop("qrels_unknown_document", None)  # no longer kept: counted under the name that says so
        self.skipped.pop("query_without_positive", None)
        self.skipped["qrels_unknown_document_dropped"] += outside
        self.skipped["query_without_positive_dropped"] += len(self.query_ids) - len(keep)
        kept = {self.query_ids[i] for i in keep}
        self.query_ids = [self.query_ids[i] for i in keep]
        self.query_texts = [self.query_texts[i] for i in keep]
        self.query_langs = [self.query_langs[i] for i in keep]
        self.query_groups = [{l: q for l, q in g.items() if q in kept} for g in self.query_groups]
        self.qrels = {q: qrels[q] for q in self.query_ids}
        self.skipped = Counter({k: v for k, v in self.skipped.items() if v})
        self.scoring = "release"
        return self

    def summary(self) -> str:
        skips = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()))
        return (f"{self.name}: {len(self.query_ids)} queries, {len(self.doc_ids)} documents, "
                f"{len(self.languages)} languages ({self.setting}{', release scoring' if self.scoring == 'release' else ''})" + (f"; skipped: {skips}" if skips else ""))


def parallel_qa(name: str, rows: dict[str, list[tuple[str, str, str]]], source: str = "") -> Benchmark:
    """LAReQA-style MLIR benchmark from a parallel QA set.

    rows[lang]: (question_key, question, context) per question, where question_key is the same for
    the translations of one question (XQuAD/MLQA id, Belebele (link, question_number)). The corpus
    holds every distinct context of every language once; query (key, lang) has as positives the
    context of `key` in every language that has it.
    """
    doc_of: dict[tuple[str, str], str] = {}  # (lang, context) -> docid
    doc_ids, doc_texts, doc_langs = [], [], []
    context_doc: dict[str, dict[str, str]] = {}  # question key -> {lang: docid}
    queries: list[tuple[str, str, str, str]] = []  # (qid, question key, text, lang)
    for lang in sorted(rows):
        seen: set[str] = set()
        for key, question, context in rows[lang]:
            if key in seen:
                raise MimoError(f"{source or name}: duplicate question id {key!r} in language {lang}")
            seen.add(key)
            doc = doc_of.get((lang, context))
            if doc is None:
                doc = doc_of[(lang, context)] = f"{lang}-{len(doc_ids)}"
                doc_ids.append(doc)
                doc_texts.append(context)
                doc_langs.append(lang)
            context_doc.setdefault(key, {})[lang] = doc
            queries.append((f"{lang}-{key}", key, question, lang))
    qrels = {qid: {d: 1 for d in context_doc[key].values()} for qid, key, _, _ in queries}
    query_groups = [{lang: f"{lang}-{key}" for lang in docs} for key, docs in context_doc.items()]
    doc_groups = list({tuple(sorted(g.items())): g for g in context_doc.values()}.values())
    return Benchmark(name, "mlir", [q[0] for q in queries], [q[2] for q in queries], [q[3] for q in queries], doc_ids, doc_texts, doc_langs, qrels,
                     query_groups, doc_groups, source=source or name).checked()
