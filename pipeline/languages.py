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


def check_languages(langs, where: str) -> tuple[str, ...]:
    """Return `langs` as a tuple, or raise MimoError naming the first unknown code and `where`."""
    from pipeline.errors import MimoError

    out = tuple(langs)
    for lang in out:
        if lang not in LANGUAGES:
            raise MimoError(f"{where}: unknown language code {lang!r} (known: {' '.join(LANGUAGES)})")
    if len(set(out)) != len(out):
        raise MimoError(f"{where}: language codes repeat: {' '.join(out)}")
    return out
