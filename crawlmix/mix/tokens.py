"""Mixer token counts (used by crawlmix/mix/plan.py and sources.py): TokenCounter counts the
tokens of sample texts offline, with 'builtin:whitespace' (the `tokenizers` Whitespace pre-tokenizer's
pattern, the default), 'builtin:bytes' (UTF-8 length) or a local HF tokenizer.json. The builtins are
vectorised with NumPy over character classes, not a regex per text, and give exactly the regex's counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crawlmix.mix.config import TokenConfig
from crawlmix.runtime import storage
from crawlmix.runtime.config import ConfigError


# ---------------------------------------------------------------------------------------------- tokens
_SPACE, _WORD, _PUNCT, _UNKNOWN = 0, 1, 2, 255
_CLASS_TABLE: np.ndarray | None = None  # code point -> class, filled lazily for the code points seen
_COUNT_CHUNK = 1 << 20  # characters per vectorised pass (bounds the temporary arrays)


def _char_class(cp: int) -> int:
    c = chr(cp)  # exactly the `re` module's \w (isalnum or '_') and \s (isspace) for str patterns
    return _WORD if c.isalnum() or c == "_" else _SPACE if c.isspace() else _PUNCT


def _classes(cps: np.ndarray) -> np.ndarray:
    global _CLASS_TABLE
    if _CLASS_TABLE is None:
        _CLASS_TABLE = np.full(0x110000, _UNKNOWN, np.uint8)
        _CLASS_TABLE[:128] = [_char_class(c) for c in range(128)]
    cls = _CLASS_TABLE[cps]
    unknown = cls == _UNKNOWN
    if unknown.any():
        for cp in np.unique(cps[unknown]).tolist():
            _CLASS_TABLE[cp] = _char_class(cp)
        cls = _CLASS_TABLE[cps]
    return cls


_ASCII_CLASSES = bytes(_char_class(c) for c in range(128)) + bytes(128)


def _text_classes(text: str) -> np.ndarray:
    """The class of every character of text (uint8: space, word, punctuation)."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii").translate(_ASCII_CLASSES), np.uint8)
    return _classes(np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32))


def _chunks(texts: list[str]):
    """(first, last, lengths) of runs of texts holding about _COUNT_CHUNK characters each."""
    lens = np.fromiter(map(len, texts), np.int64, len(texts))
    ends = np.cumsum(lens)
    a = 0
    while a < len(texts):
        b = max(a + 1, int(np.searchsorted(ends, (ends[a - 1] if a else 0) + _COUNT_CHUNK, "right")))
        yield a, b, lens[a:b]
        a = b


def count_whitespace_tokens(texts: list[str]) -> np.ndarray:
    """len(re.findall(r"\\w+|[^\\w\\s]+", t)) for every text (the `tokenizers` Whitespace pre-tokenizer's
    pattern), vectorised: the matches are the maximal runs of word characters and of other non-space
    characters, so a token starts wherever the character class changes to word or punctuation."""
    out = np.zeros(len(texts), np.int64)
    for a, b, lens in _chunks(texts):
        cls = _text_classes("".join(texts[a:b]))
        if not len(cls):
            continue
        ends = np.cumsum(lens)
        starts = ends - lens
        new = np.empty(len(cls), bool)
        new[0] = True
        np.not_equal(cls[1:], cls[:-1], out=new[1:])
        new[starts[lens > 0]] = True  # a text never continues the previous one's run
        np.logical_and(new, cls, out=new)  # and is not a space
        first = np.flatnonzero(new)
        out[a:b] = np.searchsorted(first, ends) - np.searchsorted(first, starts)
    return out


def utf8_lengths(texts: list[str]) -> np.ndarray:
    """len(t.encode()) for every text, vectorised."""
    out = np.zeros(len(texts), np.int64)
    for a, b, lens in _chunks(texts):
        joined = "".join(texts[a:b])
        if joined.isascii():
            out[a:b] = lens
            continue
        cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), np.uint32)
        nb = 1 + (cps >= 0x80).astype(np.int64) + (cps >= 0x800) + (cps >= 0x10000)
        cum = np.zeros(len(nb) + 1, np.int64)
        np.cumsum(nb, out=cum[1:])
        ends = np.cumsum(lens)
        out[a:b] = cum[ends] - cum[ends - lens]
    return out


class TokenCounter:
    """Counts tokens offline: 'builtin:whitespace' (default), 'builtin:bytes', or a local HF tokenizer.json."""

    def __init__(self, cfg: TokenConfig, root: Path | str = Path(".")):
        self.cfg = cfg
        self.spec = cfg.tokenizer
        self._tok = None
        if not self.spec.startswith("builtin:") and (storage.is_remote(self.spec) or (
                storage.is_remote(root) and not storage.is_url(self.spec) and not Path(self.spec).is_absolute())):
            self._remote(root)
        elif not self.spec.startswith("builtin:"):
            path = Path(storage.local(self.spec)).expanduser()
            path = path if path.is_absolute() else Path(root) / path
            if path.is_dir():
                path = path / "tokenizer.json"
            if not path.is_file():
                raise ConfigError(f"tokens.tokenizer: no tokenizer.json at {path} (give a local path; nothing is "
                                  f"downloaded), or use builtin:whitespace / builtin:bytes")
            from tokenizers import Tokenizer

            try:
                self._tok = Tokenizer.from_file(str(path))
            except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exceptions
                raise ConfigError(f"tokens.tokenizer: {path} is not a valid tokenizer.json: {e}") from None
            self.spec = str(path)
        elif self.spec not in ("builtin:whitespace", "builtin:bytes"):
            raise ConfigError(f"tokens.tokenizer: unknown builtin {self.spec!r} (builtin:whitespace, builtin:bytes)")

    def _remote(self, root) -> None:
        """A tokenizer.json behind a URL (or relative to a URL --root): read from its copy in local scratch."""
        from crawlmix.mix.fetch import local_copy

        url = self.spec if storage.is_remote(self.spec) else storage.join(root, self.spec)
        if not storage.isfile(url):
            url = storage.join(url, "tokenizer.json")
        if not storage.isfile(url):
            raise ConfigError(f"tokens.tokenizer: no tokenizer.json at {url}, or use builtin:whitespace / "
                              f"builtin:bytes")
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(local_copy(url))
        except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exceptions
            raise ConfigError(f"tokens.tokenizer: {url} is not a valid tokenizer.json: {e}") from None
        self.spec = url

    def count(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, np.int64)
        if self._tok is not None:
            return np.fromiter((len(e.ids) for e in self._tok.encode_batch(texts, add_special_tokens=False)),
                               np.int64, len(texts))
        if self.spec == "builtin:bytes":
            return utf8_lengths(texts)
        return count_whitespace_tokens(texts)
