"""The paper's 14 languages (the mMARCO set) and the names other data sets give them."""

# Order is the paper's (App. B.2) and fixes every round-robin and report ordering.
LANGUAGES: tuple[str, ...] = (
    "ar", "de", "nl", "en", "es", "fr", "hi", "id", "it", "ja", "pt", "ru", "vi", "zh",
)

# mMARCO names its per-language files by the English name of the language.
MMARCO_NAMES: dict[str, str] = {
    "ar": "arabic", "de": "german", "nl": "dutch", "en": "english", "es": "spanish",
    "fr": "french", "hi": "hindi", "id": "indonesian", "it": "italian", "ja": "japanese",
    "pt": "portuguese", "ru": "russian", "vi": "vietnamese", "zh": "chinese",
}


def check_languages(langs, where: str, known=None, default=()) -> tuple[str, ...]:
    """Return `langs` (or `default` when empty) as a tuple, or raise MimoError naming `where` and the
    first code outside `known` (the paper's 14 by default; a benchmark passes the languages it has),
    or the repeated codes."""
    from pipeline.errors import MimoError

    out = tuple(langs) or tuple(default)
    bad = [lang for lang in out if lang not in (LANGUAGES if known is None else known)]
    if bad and known is None:
        raise MimoError(f"{where}: unknown language code {bad[0]!r} (known: {' '.join(LANGUAGES)})")
    if bad:
        raise MimoError(f"{where}: language(s) {' '.join(bad)} not available (available: {' '.join(known)})")
    if len(set(out)) != len(out):
        raise MimoError(f"{where}: language codes repeat: {' '.join(out)}")
    return out
