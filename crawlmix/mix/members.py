"""Mixer canonical JSON for the output .json members (used by crawlmix/mix/readers.py and write.py): sorted
keys, compact, UTF-8, so the same sample always gives the same bytes. loads() and encode() go through
orjson (a declared dependency; faster, same bytes) and fall back to the standard library for what orjson
refuses or writes differently (NaN / infinity, ints past 64 bits, floats); JsonTemplate builds a source
file's output .json per sample from constant pieces and the JSON of the per-sample fields; every output
.json starts with JSON_HEAD and its epoch.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring

import orjson as _orjson

JSON_HEAD = b'{"epoch":'  # every output .json starts with its epoch (keys are sorted): head + digits + rest


# ---------------------------------------------------------------------------------------------- JSON
# Canonical JSON (sorted keys, compact, UTF-8): the same sample always gives the same bytes.
_ENCODE = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode
# orjson (a declared dependency) parses, and for float-free values writes, the same JSON faster; with
# _orjson = None everything goes through the standard library, which gives the same bytes (tested).


def _has_float(v) -> bool:
    """A float anywhere in a dict / list (orjson writes some floats differently from repr())."""
    for x in (v.values() if type(v) is dict else v):
        t = type(x)
        if t is float or ((t is dict or t is list) and _has_float(x)):
            return True
    return False


def loads(raw: bytes | str):
    """(value, exact): json.loads(raw), through orjson. exact: orjson parsed it, so the
    value holds no NaN / infinity / int past 64 bits (json decides what orjson refuses)."""
    if _orjson is not None:
        try:
            return _orjson.loads(raw), True
        except _orjson.JSONDecodeError:
            pass
    return json.loads(raw), False


def encode(value, exact: bool = False) -> str:
    """_ENCODE(value). exact (from loads): orjson may write a dict or list, unless it holds a float (orjson
    formats some floats differently from repr())."""
    t = type(value)
    if t is str:
        return encode_basestring(value)
    if value is None:
        return "null"
    if t is int:
        return int.__repr__(value)
    if exact and _orjson is not None and (t is dict or t is list) and not _has_float(value):
        try:
            return _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS).decode()
        except _orjson.JSONEncodeError:  # e.g. nested deeper than orjson writes
            pass
    return _ENCODE(value)


INPUT_KEYS = ("config_hash", "crawlmix_version", "seed")  # a crawl's provenance (uniform .json: always, "" if unknown)


class JsonTemplate:
    """A source file's output .json with the per-sample fields left open.

    rest(id, url, language, index, meta, images) is everything after the epoch digits, byte for byte what
    _ENCODE(the .json) gives, built from constant pieces and the JSON of the per-sample fields (no dict is
    built or sorted per sample).

    layout 'source': {"source", "modality", "id", "url", "language", "epoch", "provenance", "meta"} with
    the values as they come (None where unknown; meta the source's own metadata object; provenance.input
    only for crawl Parquet). layout 'uniform': one schema for every sample of every source, so that
    column-inferring readers (Hugging Face `datasets`, Ray Data) see the same types everywhere: strings
    are never null ("" where unknown), provenance.index is a string, provenance.input always has
    INPUT_KEYS, meta is the source's metadata as a canonical JSON string, and "images" counts the
    sample's images.
    """

    _SLOTS = {"source": ("id", "language", "meta", "index", "url"),
              "uniform": ("id", "images", "language", "meta", "index", "url")}

    def __init__(self, source: str, modality: str, common: dict, file: str, file_meta: dict | None,
                 layout: str = "source"):
        self.uniform = layout == "uniform"
        slots = self._SLOTS[layout]
        mark = {k: f"\x00{k}\x00" for k in slots}
        prov = dict(common, file=file, index=mark["index"])
        if self.uniform:
            prov["input"] = {k: str((file_meta or {}).get(k, "")) for k in INPUT_KEYS}
        elif file_meta:
            prov["input"] = file_meta
        doc = {"source": source, "modality": modality, "epoch": 0, "provenance": prov,
               **{k: mark[k] for k in slots if k != "index"}}
        doc = _ENCODE(doc)
        if not doc.startswith(JSON_HEAD.decode() + "0,"):
            raise AssertionError("epoch must be the first key of the output .json")
        doc = doc[len(JSON_HEAD) + 1:]
        pieces, order = [], []
        while True:
            at = [(doc.find(_ENCODE(m)), k) for k, m in mark.items() if k not in order]
            at = [(i, k) for i, k in at if i >= 0]
            if not at:
                break
            i, k = min(at)
            pieces.append(doc[:i])
            order.append(k)
            doc = doc[i + len(_ENCODE(mark[k])):]
        pieces.append(doc)
        if tuple(order) != slots:  # the sorted key order rest() relies on
            raise AssertionError(f"unexpected .json field order {order}")
        self.pieces = pieces

    def rest(self, sid, url, language, index, meta, exact: bool = False, images: int = 0) -> bytes:
        """exact: meta came from loads() with exact=True (see encode())."""
        p = self.pieces
        if self.uniform:
            s = lambda v: encode_basestring("" if v is None else v if type(v) is str else str(v))  # noqa: E731
            return (p[0] + s(sid) + p[1] + int.__repr__(images) + p[2] + s(language) + p[3]
                    + encode_basestring(encode(meta, exact)) + p[4] + s(index) + p[5] + s(url) + p[6]).encode()
        return (p[0] + encode(sid) + p[1] + encode(language) + p[2] + encode(meta, exact) + p[3] + encode(index)
                + p[4] + encode(url) + p[5]).encode()
