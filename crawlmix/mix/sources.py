"""Mixer sources: find, fingerprint, read and index the curated inputs of a mixture (used by pipelines/mix.py).

A source (Parquet from a crawl, WebDataset tars, JSONL) is indexed once, before anything is written: per
sample its payload members (extension, where the bytes are, size), its output ``.json`` (built once, here),
its token count and its exact size in a shard. Writers then only copy bytes (pipelines/mix_write.py).

Tars are memory-mapped and indexed from their headers alone (pipelines/tar_index.py): a plain USTAR tar
with NumPy (the blocks carrying the ustar magic, which must chain exactly by their sizes), any other (GNU
long names, pax, directories) by a header walk; checksums and sizes are verified either way. Member bytes
are never decoded: only the ``.json`` metadata and ``.txt`` text members are read. Token counts for the
builtin tokenizers are vectorised too (character classes, not a regex per text; pipelines/mix_tokens.py).
The output ``.json`` is canonical JSON from a per-file template (pipelines/mix_json.py).
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import json
import mmap
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crawlmix.runtime.config import ConfigError
from crawlmix.runtime.resources import PACKAGE
from crawlmix.mix.members import JSON_HEAD, JsonTemplate, loads
from crawlmix.mix.tokens import TokenCounter
from crawlmix.mix.config import SourceConfig
from crawlmix.mix.tar_index import _TarScan

IMAGE_EXTS = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "pgm", "avif"}
TEXT_EXTS = {"txt", "text"}
MAX_EXT_BYTES = 89  # output member names are "<10-digit key>.<ext>" in the 100-byte USTAR name field
MAX_MEMBER_BYTES = 0o77777777777  # the largest size an 11-digit octal USTAR size field holds (8 GiB - 1)


class MixError(ConfigError):
    """A mixture that cannot be built from its inputs (missing, empty or corrupt source, too little data)."""


def digits(n: np.ndarray) -> np.ndarray:
    """len(str(n)) of non-negative integers."""
    d = np.ones(len(n), np.int64)
    t = 10
    while len(n) and int(n.max()) >= t:
        d += n >= t
        t *= 10
    return d


def tar_member_bytes(n):
    """Bytes a member of n data bytes takes in a tar (header + data padded to 512); works on numpy arrays."""
    return 512 + (n + 511) // 512 * 512


# ---------------------------------------------------------------------------------------------- files
def _expand(pattern: str) -> list[str]:
    import braceexpand

    out = []
    for p in braceexpand.braceexpand(pattern):
        if any(c in p for c in "*?["):
            out += sorted(glob.glob(p, recursive=True))
        elif os.path.isdir(p):
            sub = os.path.join(p, "curated")
            d = sub if os.path.isdir(sub) else p
            out += sorted(f for ext in ("*.parquet", "*.tar", "*.jsonl", "*.jsonl.gz")
                          for f in glob.glob(os.path.join(d, ext)))
        elif os.path.exists(p):
            out.append(p)
    return list(dict.fromkeys(f for f in out if os.path.isfile(f)))


def _fmt_of(path: str) -> str:
    if path.endswith(".parquet"):
        return "parquet"
    if path.endswith(".tar"):
        return "webdataset"
    if path.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")):
        return "jsonl"
    raise ValueError(f"unknown format of {path} (.parquet, .tar, .jsonl[.gz]; or set 'format')")


def _map(path: str):
    """The file memory-mapped read-only (b"" when empty)."""
    with open(path, "rb") as fh:
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(fh.fileno()).st_size else b""


def _fingerprint(path: str, mm=None) -> str:
    import xxhash

    if mm is not None:
        return xxhash.xxh3_64(mm).hexdigest()
    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 23):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- the index
@dataclass
class Source:
    """One source's index: per sample its payload members, output .json, size in a shard and tokens.

    Members are flat arrays: sample i's payload members are m_start[i]:m_start[i+1], each an extension
    (exts[m_ext]), an offset and a size in buffer m_buf (a tar file of the source, or for Parquet / JSONL
    the source's UTF-8 text blob). Sample i's .json at epoch e is JSON_HEAD + str(e) + json_rest[j_start[i]:
    j_start[i+1]]. Tars are memory-mapped lazily and never pickled; everything else travels with the index
    (to forked writers and Ray actors).
    """

    cfg: SourceConfig
    files: list[str]
    rel_files: list[str]
    fmt: str
    fingerprints: list[dict] = field(default_factory=list)
    file_of: np.ndarray = None  # file index per sample
    body_bytes: np.ndarray = None  # tar bytes of the payload members per sample
    json_len: np.ndarray = None  # length of the output .json at epoch 0
    tokens: np.ndarray = None
    exts: list = None  # member extensions (m_ext indexes this)
    m_start: np.ndarray = None  # n + 1: member range per sample
    m_ext: np.ndarray = None
    m_buf: np.ndarray = None  # which buffer: a tar file index, or 0 for the text blob
    m_off: np.ndarray = None
    m_size: np.ndarray = None
    m_cont: np.ndarray = None  # the member directly follows the previous one in its tar (see _contiguous)
    json_rest: bytes | bytearray = b""
    j_start: np.ndarray = None  # n + 1
    text: bytes | bytearray | None = None  # Parquet / JSONL: every sample's text, UTF-8, concatenated
    file_meta: list = None  # per file provenance (Parquet schema metadata of a crawl)
    _maps: list = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def n(self) -> int:
        return len(self.file_of)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_maps"] = None
        return d

    def renamed(self, cfg: SourceConfig) -> Source:
        """The same inputs under another source config (same path, format, filters): the index is shared
        unless the name or modality inside each .json differ."""
        return dataclasses.replace(self, cfg=cfg)

    def buffers(self) -> list:
        """What m_buf indexes: the tar files memory-mapped (opened on first use), or [text blob]."""
        if self.fmt != "webdataset":
            return [self.text]
        if self._maps is None:
            self._maps = [_map(f) for f in self.files]
        return self._maps

    def sample_bytes(self, idx: np.ndarray, epoch: np.ndarray) -> np.ndarray:
        """Exact tar bytes of samples idx at the given epochs (the json grows by the epoch's extra digits)."""
        return self.body_bytes[idx] + tar_member_bytes(self.json_len[idx] + digits(epoch) - 1)

    # -- loading ------------------------------------------------------------------------------------
    def _err(self, msg: str) -> MixError:
        return MixError(f"source {self.name!r}: {msg}")

    def _load_parquet(self):
        import pyarrow.parquet as pq

        tf = self.cfg.text_field
        for f in self.files:
            try:
                pf = pq.ParquetFile(f)
            except Exception as e:  # noqa: BLE001
                raise self._err(f"cannot read Parquet {f}: {e}") from None
            names = pf.schema_arrow.names
            if tf not in names:
                raise self._err(f"{f} has no column {tf!r} (columns: {', '.join(names[:12])})")
            cols = [c for c in names if c in (tf, "id", "url", "language", "language_score", "date", "source",
                                              "offset", "charset", "cc_languages", "extractor")]
            md = pf.schema_arrow.metadata or {}
            meta = {k.decode(): md[k].decode() for k in (b"config_hash", b"seed", b"crawlmix_version") if k in md}
            yield pf.read(columns=cols), meta

    def _load_jsonl(self, f: str):
        """[(line number, object, exact)] of a JSONL file (exact: see loads())."""
        rows = []
        opener = gzip.open if f.endswith(".gz") else open
        tf = self.cfg.text_field
        try:
            with opener(f, "rb") as fh:
                for ln, line in enumerate(fh, 1):
                    line = line[:-1] if line.endswith(b"\n") else line
                    if not line.strip():
                        continue
                    try:
                        obj, exact = loads(line)
                    except json.JSONDecodeError as e:
                        raise self._err(f"{f}:{ln}: not valid JSON ({e.msg})") from None
                    except UnicodeDecodeError as e:
                        raise self._err(f"cannot read {f}: {e}") from None
                    if type(obj) is not dict or not isinstance(obj.get(tf), str):
                        raise self._err(f"{f}:{ln}: no string field {tf!r}")
                    rows.append((ln, obj, exact))
        except (OSError, EOFError) as e:
            raise self._err(f"cannot read {f}: {e}") from None
        return rows

    # -- indexing -----------------------------------------------------------------------------------
    def build_index(self, tokens: TokenCounter, common: dict) -> None:
        if self.fmt == "webdataset":
            self._index_tars(tokens, common)
        else:
            self._index_texts(tokens, common)

    def _template(self, common: dict, fi: int) -> JsonTemplate:
        meta = self.file_meta[fi] if self.file_meta else None
        return JsonTemplate(self.name, self.cfg.modality, common, self.rel_files[fi], meta)

    def _finish(self, file_of, rests: _Blob, texts, img_counts, tokens: TokenCounter) -> None:
        self.file_of = np.asarray(file_of, np.int32)
        self.json_rest, lens = rests.data, np.asarray(rests.lens, np.int64)
        self.j_start = np.zeros(len(lens) + 1, np.int64)
        np.cumsum(lens, out=self.j_start[1:])
        self.json_len = lens + len(JSON_HEAD) + 1
        per = self.cfg.modality == "video" and "per_video_frame" or "per_image"
        self.tokens = tokens.count(texts) + np.asarray(img_counts, np.int64) * getattr(tokens.cfg, per)
        sizes = self.m_size
        if len(sizes) and int(sizes.max()) > MAX_MEMBER_BYTES:
            raise self._err(f"a member of {int(sizes.max()):,} bytes is larger than a USTAR tar member can be")
        cum = np.zeros(len(sizes) + 1, np.int64)  # tar bytes of members [0, m)
        np.cumsum(tar_member_bytes(sizes), out=cum[1:])
        self.body_bytes = cum[self.m_start[1:]] - cum[self.m_start[:-1]]

    def _index_texts(self, tokens: TokenCounter, common: dict) -> None:
        """Parquet / JSONL: one text member per sample, its bytes in one UTF-8 blob."""
        langs = set(self.cfg.languages) if self.cfg.languages else None
        file_of, rests, texts = [], _Blob(), []
        self.file_meta = []
        if self.fmt == "parquet":
            import pyarrow as pa

            tf = self.cfg.text_field
            meta_cols = ("date", "language_score", "charset", "cc_languages", "extractor")
            is_text = (pa.types.is_string, pa.types.is_large_string, getattr(pa.types, "is_string_view", None))
            for fi, (table, fmeta) in enumerate(self._load_parquet()):
                self.file_meta.append(fmeta)
                tpl = self._template(common, fi)
                n = table.num_rows
                col = table.column(tf)
                if not any(t(col.type) for t in is_text if t) or col.null_count:
                    raise self._err(f"{self.files[fi]}: column {tf!r} must hold text in every row "
                                    f"({col.type}, {col.null_count} null)")
                cols = {c: table.column(c).to_pylist() for c in table.column_names}
                none = [None] * n
                text, ids, urls, lang = cols[tf], cols.get("id", none), cols.get("url", none), cols.get("language", none)
                mcols = [(k, cols[k]) for k in meta_cols if k in cols]
                warc, woff = cols.get("source"), cols.get("offset", none)
                fname = Path(self.files[fi]).name
                for row in range(n):
                    if langs is not None and lang[row] not in langs:
                        continue
                    meta = {k: v[row] for k, v in mcols if v[row] is not None}
                    if warc is not None and warc[row] is not None:
                        meta["warc"] = warc[row]
                        meta["warc_offset"] = woff[row]
                    file_of.append(fi)
                    texts.append(text[row])
                    rests.add(tpl.rest(ids[row] or f"{fname}:{row}", urls[row], lang[row], row, meta))
        else:
            tf = self.cfg.text_field
            skip = (tf, "id", "url", "language")
            for fi, f in enumerate(self.files):
                self.file_meta.append(None)
                tpl = self._template(common, fi)
                fname = Path(f).name
                for ln, obj, exact in self._load_jsonl(f):
                    lang = obj.get("language")
                    if langs is not None and lang not in langs:
                        continue
                    meta = {k: v for k, v in obj.items() if k not in skip}
                    file_of.append(fi)
                    texts.append(obj[tf])
                    rests.add(tpl.rest(obj.get("id") or f"{fname}:{ln}", obj.get("url"), lang, ln, meta, exact))
        if not any(self.file_meta):
            self.file_meta = [None] * len(self.files)
        blob = _Blob()
        try:
            for t in texts:
                blob.add(t.encode())
        except UnicodeEncodeError as e:
            raise self._err(f"a text is not valid Unicode ({e})") from None
        n = len(texts)
        sizes = np.asarray(blob.lens, np.int64)
        self.text = blob.data
        self.exts = ["txt"]
        self.m_start = np.arange(n + 1, dtype=np.int64)
        self.m_ext = np.zeros(n, np.int32)
        self.m_buf = np.zeros(n, np.int32)
        self.m_size = sizes
        self.m_off = np.cumsum(sizes) - sizes
        self.m_cont = np.zeros(n, bool)
        self._finish(file_of, rests, texts, np.zeros(n, np.int64), tokens)

    def _index_tars(self, tokens: TokenCounter, common: dict) -> None:
        """WebDataset tars: members grouped by key (webdataset's rule: the path up to the first dot of the
        file name), payload members in tar order, the sample's .json read for its metadata."""
        from tarfile import ReadError

        langs = set(self.cfg.languages) if self.cfg.languages else None
        self.file_meta = [None] * len(self.files)
        maps = self.buffers()
        ext_id: dict = {}
        file_of, rests, texts, img_counts = [], _Blob(), [], []
        counts, m_ext, m_buf, m_off, m_size, m_cont = [], [], [], [], [], []
        for fi, f in enumerate(self.files):
            mm = maps[fi]
            try:
                scan = _TarScan(mm)
            except ReadError as e:
                raise self._err(f"corrupt tar {f}: {e}") from None
            if not len(scan):
                continue
            if scan.bad is not None:
                raise self._err(f"corrupt tar {f}: member {scan.name(scan.bad)} has no extension "
                                f"(not a WebDataset tar)")
            for e in scan.exts:
                ext_id.setdefault(e, len(ext_id))
            flags = np.zeros((3, len(ext_id)), bool)  # json, text, image per extension
            for e, i in ext_id.items():
                last = e.rsplit(".", 1)[-1]
                flags[:, i] = (e == "json", last in TEXT_EXTS, last.lower() in IMAGE_EXTS)
            M = len(scan)
            ids = np.asarray([ext_id[e] for e in scan.exts], np.int32)[scan.ext_of]
            offs, sizes, starts = scan.offs, scan.sizes, scan.starts
            G = len(starts)
            grp = np.repeat(np.arange(G), np.diff(np.append(starts, M)))
            is_json, is_text, is_img = flags[:, ids]
            metas: list = [{}] * G
            exact = [True] * G
            offs_l, sizes_l, grp_l = offs.tolist(), sizes.tolist(), grp.tolist()
            for m in np.flatnonzero(is_json).tolist():
                o, g = offs_l[m], grp_l[m]
                try:
                    metas[g], exact[g] = loads(mm[o:o + sizes_l[m]])
                except ValueError as e:
                    raise self._err(f"corrupt tar {f}: {scan.key(m)}.json is not valid JSON ({e})") from None
            txt: dict = {}
            for m in np.flatnonzero(is_text).tolist():
                o = offs_l[m]
                txt.setdefault(grp_l[m], []).append(mm[o:o + sizes_l[m]].decode("utf-8", "replace"))
            npay = np.add.reduceat((~is_json).astype(np.int64), starts)
            nimg = np.add.reduceat(is_img.astype(np.int64), starts)
            keep = npay > 0  # nothing but metadata: webdataset would yield an empty sample
            if langs is not None:
                keep &= [(m.get("language") if isinstance(m, dict) else None) in langs for m in metas]
            tpl = self._template(common, fi)
            kept = np.flatnonzero(keep)
            for g, key in zip(kept.tolist(), scan.keys(starts[kept])):
                meta = metas[g]
                if not isinstance(meta, dict):
                    meta = {"value": meta}
                rests.add(tpl.rest(meta.get("id") or meta.get("key") or key, meta.get("url"),
                                      meta.get("language"), key, meta, exact[g]))
                t = txt.get(g)
                texts.append("\n".join(t) if t else "")
            file_of += [fi] * int(keep.sum())
            img_counts.append(nimg[keep])
            counts.append(npay[keep])
            mk = ~is_json & keep[grp]
            e_, o_, s_, g_ = ids[mk], offs[mk], sizes[mk], grp[mk]
            long = [e for e, i in ext_id.items() if len(e.encode()) > MAX_EXT_BYTES and (e_ == i).any()]
            if long:
                raise self._err(f"{f}: member extension {long[0]!r} is longer than {MAX_EXT_BYTES} bytes "
                                f"(no room in a tar header)")
            m_ext.append(e_)
            m_buf.append(np.full(len(e_), fi, np.int32))
            m_off.append(o_)
            m_size.append(s_)
            m_cont.append(_contiguous(mm, g_, o_, s_))
        cat = (lambda xs, t: np.concatenate(xs).astype(t) if xs else np.zeros(0, t))
        self.exts = list(ext_id)
        n = cat(counts, np.int64)
        self.m_start = np.zeros(len(n) + 1, np.int64)
        np.cumsum(n, out=self.m_start[1:])
        self.m_ext, self.m_buf = cat(m_ext, np.int32), cat(m_buf, np.int32)
        self.m_off, self.m_size, self.m_cont = cat(m_off, np.int64), cat(m_size, np.int64), cat(m_cont, bool)
        self._finish(file_of, rests, texts, cat(img_counts, np.int64), tokens)


class _Blob:
    """Byte strings appended into one buffer (no list of pieces plus a joined copy), with their lengths."""

    def __init__(self):
        self.data = bytearray()
        self.lens: list[int] = []

    def add(self, b: bytes) -> None:
        self.data += b
        self.lens.append(len(b))


def _contiguous(mm, grp: np.ndarray, off: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Per member: it directly follows the previous member of the same sample in the tar (one header
    block after that member's zero padding). A writer copies such runs in one piece, then writes its own
    headers over the source's."""
    n = len(off)
    cont = np.zeros(n, bool)
    if n < 2:
        return cont
    end = off + (size + 511) // 512 * 512
    cont[1:] = (grp[1:] == grp[:-1]) & (off[1:] == end[:-1] + 512)
    rem = size % 512
    check = np.flatnonzero(cont[1:] & (rem[:-1] > 0))  # members whose padding a run would copy
    if len(check):
        blocks = np.frombuffer(mm, np.uint8, len(mm) // 512 * 512).reshape(-1, 512)
        word = np.arange(64)
        for a in range(0, len(check), 2048):
            c = check[a:a + 2048]
            tail = blocks[(off[c] + size[c]) // 512].view("<u8")  # the block holding the end, as 64 words
            w, r = rem[c] // 8, rem[c] % 8  # padding starts at byte r of word w
            dirty = ((tail != 0) & (word > w[:, None])).any(1)
            dirty |= (tail[np.arange(len(c)), w] >> (8 * r).astype(np.uint64)) != 0
            cont[c[dirty] + 1] = False
    return cont


def resolve_source(cfg: SourceConfig, root: Path, progress: bool = True) -> Source:
    pattern = cfg.path if os.path.isabs(os.path.expanduser(cfg.path)) else str(root / cfg.path)
    pattern = os.path.expanduser(pattern)
    files = _expand(pattern)
    if not files and cfg.bundled:
        _make_bundled(cfg, pattern, progress)
        files = _expand(pattern)
    if not files:
        hint = f" (bundled: {cfg.bundled} generated nothing there)" if cfg.bundled else ""
        raise MixError(f"source {cfg.name!r}: path {cfg.path!r} matches no file{hint} (looked in {pattern})")
    try:
        fmts = {cfg.format if cfg.format != "auto" else _fmt_of(f) for f in files}
    except ValueError as e:
        raise MixError(f"source {cfg.name!r}: {e}") from None
    if len(fmts) > 1:
        raise MixError(f"source {cfg.name!r}: path {cfg.path!r} mixes formats {sorted(fmts)}; one format per source")
    fmt = fmts.pop()
    rel = []
    for f in files:
        try:
            rel.append(os.path.relpath(f, root) if not os.path.relpath(f, root).startswith("..") else f)
        except ValueError:
            rel.append(f)
    src = Source(cfg=cfg, files=files, rel_files=rel, fmt=fmt)
    maps = src.buffers() if fmt == "webdataset" else [None] * len(files)  # tars: hash the mapping in place
    src.fingerprints = [{"path": r, "bytes": os.path.getsize(f), "xxh3": _fingerprint(f, m)}
                        for f, r, m in zip(files, rel, maps)]
    return src


def _make_bundled(cfg: SourceConfig, pattern: str, progress: bool) -> None:
    prefix = re.split(r"[*?\[{]", pattern, 1)[0]
    folder = Path(prefix if prefix.endswith("/") or os.path.isdir(prefix) else os.path.dirname(prefix))
    if cfg.bundled == "media":
        from crawlmix.samples.media_sample import write_media_sample

        print(f"source {cfg.name}: generating the bundled media sample into {folder}", file=sys.stderr)
        write_media_sample(folder)
    else:
        crawl_dir = folder.parent if folder.name in ("curated", "pairs") else folder  # text or image-text pairs
        print(f"source {cfg.name}: running the text crawl on the bundled sample into {crawl_dir}", file=sys.stderr)
        cmd = [sys.executable, "-m", "crawlmix.crawl.job", "--output", str(crawl_dir)]
        if not progress:
            cmd.append("--no-progress")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE.parent), os.environ.get("PYTHONPATH")]))}
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        if r.returncode:
            raise MixError(f"source {cfg.name!r}: the bundled crawl failed:\n{r.stdout[-2000:]}")
