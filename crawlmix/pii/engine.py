"""presidio, offline: the generated spaCy pipeline its pattern recognizers run on, tldextract without
downloads, and one AnalyzerEngine per process and pipeline (``fast_analyzer_for``: the same engine with
crawlmix.pii.phone's ChainPhoneRecognizer in place of its PhoneRecognizer). Used by crawlmix/pii/scrub.py.
"""

from __future__ import annotations

import os
import shutil
from functools import lru_cache
from pathlib import Path

from crawlmix.pii.phone import chain_phone_recognizer_class
from crawlmix.runtime.atomic import publish, tmp_path

LEMMA_COMPONENT = "crawlmix_lower_lemma"
PATTERN_LANG = "en"  # presidio's pattern recognizers are registered for English; they are language-free regexes


# --------------------------------------------------------------------------------------------------
# Offline set-up: a local spaCy pipeline for presidio, tldextract without downloads


def cache_dir() -> Path:
    d = Path(os.environ.get("CRAWLMIX_CACHE", Path.home() / ".cache" / "crawlmix"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _register_lemma_component() -> None:
    """Blank spaCy has no lemmatizer, so presidio's context words ("phone", "ssn", ...) never match.
    Lower-cased text as the lemma brings context back (presidio matches context by substring, so
    'cards' still finds 'card')."""
    from spacy.language import Language

    if Language.has_factory(LEMMA_COMPONENT):
        return

    @Language.component(LEMMA_COMPONENT)
    def _lower_lemma(doc):
        for t in doc:
            t.lemma_ = t.lower_
        return doc


def pattern_model_dir() -> Path:
    """spacy.blank('en') + the lower-case lemma component, saved once per machine under the cache
    dir (generated here, never downloaded). presidio loads it by path."""
    import spacy

    _register_lemma_component()
    d = cache_dir() / f"spacy-en-patterns-{spacy.__version__}"
    if not (d / "config.cfg").exists():
        nlp = spacy.blank("en")
        nlp.add_pipe(LEMMA_COMPONENT)
        tmp = tmp_path(d.with_name(f"{d.name}.{os.getpid()}"))  # a folder per process: workers race here
        shutil.rmtree(tmp, ignore_errors=True)
        nlp.to_disk(tmp)
        try:
            publish(tmp, d)
        except OSError:  # another worker made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return d


@lru_cache(maxsize=None)
def make_offline() -> None:
    """presidio's e-mail recognizer validates domains with tldextract's module-level extractor,
    which fetches the public suffix list on first use. Point it (and the module default) at an
    extractor that only uses the snapshot bundled with tldextract."""
    import types

    import tldextract
    import tldextract.tldextract as tt
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    offline = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    tt.TLD_EXTRACTOR = offline
    email_recognizer.tldextract = types.SimpleNamespace(extract=offline, TLDExtract=tldextract.TLDExtract)
    os.environ.setdefault("TLDEXTRACT_CACHE", str(cache_dir() / "tldextract"))


def resolve_ner_model(name: str | None) -> tuple[str | None, str]:
    """(loadable name or path, human-readable status). None when no NER model can be used."""
    if not name:
        return None, "no NER model configured (pii.ner_model): PERSON is NOT detected"
    import spacy

    if Path(name).expanduser().exists():
        return str(Path(name).expanduser()), f"NER model {name} (local path)"
    if spacy.util.is_package(name):
        return name, f"NER model {name} (installed package)"
    return None, f"NER model {name!r} is not installed (no such package or path): PERSON is NOT detected"


@lru_cache(maxsize=4)
def analyzer_for(model: str):
    """One presidio AnalyzerEngine per process and spaCy pipeline (a local path or installed package)."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    make_offline()
    _register_lemma_component()
    conf = {"nlp_engine_name": "spacy", "models": [{"lang_code": PATTERN_LANG, "model_name": model}]}
    engine = NlpEngineProvider(nlp_configuration=conf).create_engine()
    return AnalyzerEngine(nlp_engine=engine, supported_languages=[PATTERN_LANG])


@lru_cache(maxsize=4)
def fast_analyzer_for(model: str):
    """analyzer_for(model) with its PhoneRecognizer swapped for ChainPhoneRecognizer (same results,
    libphonenumber only where it could match); every other part is the same object."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    plain = analyzer_for(model)
    chain_phone = chain_phone_recognizer_class()
    recognizers = [chain_phone.like(r) if type(r) is PhoneRecognizer else r for r in plain.registry.recognizers]
    registry = RecognizerRegistry(recognizers=recognizers, global_regex_flags=plain.registry.global_regex_flags,
                                  supported_languages=plain.registry.supported_languages)
    return AnalyzerEngine(registry=registry, nlp_engine=plain.nlp_engine, supported_languages=plain.supported_languages,
                          default_score_threshold=plain.default_score_threshold,
                          context_aware_enhancer=plain.context_aware_enhancer)
