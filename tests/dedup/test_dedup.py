"""Exact + MinHash dedup: known clusters, cross-file, determinism, bad input, a 2-worker Ray run."""

from __future__ import annotations

import random
import subprocess
import sys
import tracemalloc
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import regex

from crawlmix.dedup import signatures
from crawlmix.dedup.config import DedupConfig
from crawlmix.dedup.job import load_config, run_dedup
from crawlmix.dedup.signatures import MinHasher, tokens
from crawlmix.runtime.executor import Executor
from crawlmix.text.schema import CURATED_SCHEMA
from tests.conftest import ROOT

INLINE = Executor("inline", progress=False)

WORDS = ("river bridge market town valley farmer weaver trader stone century morning crossing coast hill "
         "flood timber pier bedrock repair parish book library reader harbour council lane cycle survey bee "
         "flower dance colony nectar scout railway path tunnel cliff orchid village volunteer route").split()


def article(seed: int, n: int = 120) -> str:
    r = random.Random(seed)
    return " ".join(r.choice(WORDS) for _ in range(n)) + "."


def edit(text: str, k: int, seed: int) -> str:
    r = random.Random(seed)
    w = text.split()
    for i in r.sample(range(len(w)), k):
        w[i] = "q" * len(w[i])  # same length: the keep rule then falls back to input order
    return " ".join(w)


def write(path, docs):
    rows = [{"id": d[0], "url": f"https://example.org/{d[0]}", "text": d[1], "date": d[2] if len(d) > 2 else "2024-06-01",
             "language": "en", "source": str(path), "offset": i} for i, d in enumerate(docs)]
    pq.write_table(pa.Table.from_pylist(rows, schema=CURATED_SCHEMA), path)
    return str(path)


def removed_map(out):
    t = pq.read_table(out / "removed").to_pylist()
    return {r["id"]: (r["duplicate_of"], r["reason"]) for r in t}


def test_known_clusters_exactly(tmp_path):
    a, b, c = article(1), article(2), article(3)
    docs = [("a", a, "2024-01-02"), ("a_copy", a, "2024-01-01"),  # earlier copy wins
            ("a_edit", edit(a, 3, 7)), ("b", b), ("b_punct", b.replace(" ", ", ", 5).upper()),
            ("c", c), ("other", article(4))]
    f = write(tmp_path / "in.parquet", docs)
    stats = run_dedup([f], tmp_path / "out", DedupConfig(), INLINE)
    rem = removed_map(tmp_path / "out")
    # same date: the longer text (b_punct, with its added commas) is kept
    assert rem == {"a": ("a_copy", "exact"), "a_edit": ("a_copy", "minhash"), "b": ("b_punct", "exact")}
    kept = pq.read_table(tmp_path / "out" / "curated").column("id").to_pylist()
    assert sorted(kept) == ["a_copy", "b_punct", "c", "other"]
    assert stats["clusters"] == 2 and stats["cluster_sizes"] == {"2": 1, "3": 1}


def test_cross_file_and_rerun_identical(tmp_path):
    a = article(11, 300)
    f1 = write(tmp_path / "one.parquet", [("x1", a), ("y1", article(12))])
    f2 = write(tmp_path / "two.parquet", [("x2", edit(a, 5, 1)), ("z2", article(13))])
    run_dedup([f1, f2], tmp_path / "o1", DedupConfig(), INLINE)
    run_dedup([f1, f2], tmp_path / "o2", DedupConfig(), INLINE)
    assert removed_map(tmp_path / "o1") == {"x2": ("x1", "minhash")}
    for sub in ("curated", "removed"):
        for p in sorted((tmp_path / "o1" / sub).glob("*.parquet")):
            assert p.read_bytes() == (tmp_path / "o2" / sub / p.name).read_bytes()
    with pytest.raises(ValueError, match="share the name 'one'"):  # one signature file per name
        run_dedup([f1, str(tmp_path / "o1" / "curated" / "one.parquet")], tmp_path / "o3", DedupConfig(), INLINE)


def _outputs(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for sub in ("curated", "removed")
            for p in sorted((out / sub).glob("*.parquet"))}


def test_rerun_resumes_signatures_only_where_nothing_changed(tmp_path, monkeypatch):
    a = article(41, 300)
    f1 = write(tmp_path / "one.parquet", [("x1", a), ("y1", article(42))])
    f2 = write(tmp_path / "two.parquet", [("x2", edit(a, 5, 1)), ("z2", article(43))])
    out = tmp_path / "out"
    run_dedup([f1, f2], out, DedupConfig(), INLINE)
    first = _outputs(out)
    assert sorted(p.name for p in (out / "_dedup" / "sig" / "_tasks").glob("*.json")) == ["one.json", "two.json"]
    hashed = []
    real = MinHasher.hashes
    monkeypatch.setattr(MinHasher, "hashes", lambda self, text, minhash=True: hashed.append(text) or
                        real(self, text, minhash))
    run_dedup([f1, f2], out, DedupConfig(), INLINE)  # same inputs, same config: no text is hashed again
    assert hashed == [] and _outputs(out) == first
    write(tmp_path / "two.parquet", [("x2", edit(a, 5, 2)), ("z2", article(44))])  # new bytes, same name
    run_dedup([f1, f2], out, DedupConfig(), INLINE)
    assert len(hashed) == 2 and removed_map(out) == {"x2": ("x1", "minhash")}
    fresh = tmp_path / "fresh"
    run_dedup([f1, f2], fresh, DedupConfig(), INLINE)
    assert _outputs(out) == _outputs(fresh)
    hashed.clear()
    run_dedup([f1, f2], out, DedupConfig(seed=2), INLINE)  # another config: every signature again
    assert len(hashed) == 4


def test_a_marker_never_outlives_its_signature_file(tmp_path, monkeypatch):
    from crawlmix.runtime.completion import Completion

    f = write(tmp_path / "in.parquet", [("a", article(51)), ("b", article(52))])
    out = tmp_path / "out"
    run_dedup([f], out, DedupConfig(), INLINE)
    good = _outputs(out)

    def crash(self, name, record=None):
        raise RuntimeError("killed between the signature file and its marker")

    with monkeypatch.context() as m:  # seed 2 overwrites the signature file, then dies before its marker
        m.setattr(Completion, "mark", crash)
        with pytest.raises(Exception, match="killed"):
            run_dedup([f], out, DedupConfig(seed=2), INLINE)
    hashed = []
    real = MinHasher.hashes
    monkeypatch.setattr(MinHasher, "hashes", lambda self, text, minhash=True: hashed.append(text) or
                        real(self, text, minhash))
    run_dedup([f], out, DedupConfig(), INLINE)  # seed 1's marker is gone: its signatures are made again
    assert len(hashed) == 2 and _outputs(out) == good


def test_cli_config_is_the_jobs_dedup_section(tmp_path):
    from crawlmix.runtime.config import ConfigError

    assert load_config(ROOT / "jobs" / "default.yaml") == DedupConfig()  # top-level seed 0 is not dedup's seed
    assert load_config(ROOT / "jobs" / "fineweb-en.yaml") == DedupConfig()  # no dedup: section
    (tmp_path / "d.yaml").write_text("threshold: 0.8\nseed: 3\n")
    assert load_config(tmp_path / "d.yaml") == DedupConfig(threshold=0.8, seed=3)
    (tmp_path / "typo.yaml").write_text("treshold: 0.8\n")
    with pytest.raises(ConfigError, match="treshold"):
        load_config(tmp_path / "typo.yaml")
    (tmp_path / "job.yaml").write_text("name: x\nseed: 0\ndedup:\n  n_gram: 4\n")
    with pytest.raises(ConfigError, match="dedup.n_gram: unknown key"):
        load_config(tmp_path / "job.yaml")


def test_unrelated_texts_are_not_merged(tmp_path):
    docs = [(f"d{i}", article(100 + i, 200)) for i in range(200)]
    f = write(tmp_path / "in.parquet", docs)
    stats = run_dedup([f], tmp_path / "out", DedupConfig(), INLINE)
    assert stats["out"] == 200  # same 40-word vocabulary, different documents: no false merge


def test_bad_input(tmp_path):
    same = article(5)
    docs = [("empty", ""), ("one", "word"), ("one_again", "Word!"), ("big", article(6, 2_000_000)),
            ("zh1", "这座河边的小城从中世纪起就以每周六的集市而闻名周边地区的农民一大早就来到这里出售蔬菜奶酪和面包"),
            ("zh2", "这座河边的小城从中世纪起就以每周六的集市而闻名周边地区的农民一大早就来到这里出售蔬菜奶酪和馒头"),
            ("zh3", "夏天市政府会在中心广场举办免费音乐会天气好的时候居民们常常待到很晚餐馆也会在街上摆出更多的桌子")]
    docs += [(f"same{i:05d}", same) for i in range(10_000)]
    f = write(tmp_path / "in.parquet", docs)
    stats = run_dedup([f], tmp_path / "out", DedupConfig(), INLINE)
    rem = removed_map(tmp_path / "out")
    assert rem["one"] == ("one_again", "exact")  # "Word!" is the longer text
    assert rem["zh2"] == ("zh1", "minhash") and "zh3" not in rem
    assert sum(1 for k in rem if k.startswith("same")) == 9_999
    assert "empty" not in rem and "big" not in rem
    assert stats["out"] == len(docs) - len(rem)
    assert tokens("中文字符") == ["中", "文", "字", "符"]


def test_signature_is_seeded():
    cfg = DedupConfig(bands=4, rows=4)
    s1, s2 = MinHasher(cfg).signature(article(1)), MinHasher(cfg).signature(article(1))
    s3 = MinHasher(cfg.model_copy(update={"seed": 2})).signature(article(1))
    assert np.array_equal(s1, s2) and not np.array_equal(s1, s3)


@pytest.mark.slow
def test_standalone_on_ray_two_workers(tmp_path):
    a = article(21, 200)
    f1 = write(tmp_path / "p1.parquet", [("k1", a), ("k2", article(22))])
    f2 = write(tmp_path / "p2.parquet", [("k3", a), ("k4", edit(article(22), 2, 3))])
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "pipelines" / "dedup.py"), "--input", str(tmp_path / "p*.parquet"),
                        "--output", str(out), "--workers", "2", "--ray", "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Ray" in r.stderr  # "Started a local Ray instance" (or connected to RAY_ADDRESS's)
    assert removed_map(out) == {"k3": ("k1", "exact"), "k4": ("k2", "minhash")}
    assert "2 clusters" in r.stdout


def reference_tokens(text: str) -> list[str]:
    """datatrove's simplify_text steps with the stdlib, one character at a time (the slow, obvious version)."""
    text = regex.sub(r"\p{Nd}+([.,،٫⎖⎗⎘]\p{Nd}+)?", "0", text.lower())
    text = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")
    text = text.replace("ς", "σ")  # final sigma: folded like any sigma
    out, word = [], ""
    for ch in text:
        if ch.isalnum() or unicodedata.category(ch) == "Mc":
            if any(lo <= ord(ch) <= hi for lo, hi in signatures._CHAR_RANGES):
                out += [word, ch] if word else [ch]
                word = ""
            else:
                word += ch
        elif word:
            out.append(word)
            word = ""
    return out + [word] if word else out


def test_vectorised_tokens_match_reference():
    alphabet = list("aZeé ÉßñÑ019٣๓,.،_-'“”\t\n中文テがภาัिक्\u0301ςΣİ½²ﬁ😀")
    alphabet += [" ", " ", "word", "1,000", "3.14"]
    r = random.Random(0)
    for _ in range(3000):
        text = "".join(r.choice(alphabet) for _ in range(r.randrange(30)))
        assert tokens(text) == reference_tokens(text), text
    assert tokens("1,000,000 and 3.14.15, abc123def x_y") == ["0", "0", "and", "0", "0", "abc0def", "x", "y"]
    assert tokens("Café NAÏVE ΣΟΦΙΑΣ ab中cd") == ["cafe", "naive", "σοφιασ", "ab", "中", "cd"]


def test_exact_hash_is_over_normalised_tokens():
    mh = MinHasher(DedupConfig())
    assert mh.hashes("Café, 1,000 ÉTÉ!")[0] == mh.hashes("cafe 7 ete")[0] != mh.hashes("cafe ete")[0]
    assert mh.hashes("", minhash=False) == (mh.hashes("...")[0], None)


def test_long_texts_go_piece_by_piece(monkeypatch):
    mh = MinHasher(DedupConfig())
    texts = [article(31, 3000), "这座河边的小城从中世纪起就以每周六的集市而闻名" * 40, "a b c"]
    whole = [mh.hashes(t) for t in texts]
    monkeypatch.setattr(signatures, "_TEXT_CHUNK", 64)  # cut at spaces (at any character in CJK): same tokens
    for t, (exact, sig) in zip(texts, whole):
        e, s = mh.hashes(t)
        assert e == exact and np.array_equal(s, sig)


def test_ten_mb_document_memory_is_bounded():
    mh = MinHasher(DedupConfig())
    mh.hashes("warm up")
    big = article(6, 1_500_000)  # ~10 MB
    tracemalloc.start()
    _, sig = mh.hashes(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sig is not None and peak < 32e6


def test_inputs_and_output_as_urls_give_the_local_files(tmp_path, monkeypatch):
    """run_dedup with its inputs and output folder behind an fsspec URL (memory://, as s3:// in a cluster):
    every intermediate lives under the output URL, the local disk is not written outside the node's
    scratch, and the curated / removed files are the local run's, byte for byte."""
    import os

    from crawlmix.runtime import storage

    a, b = article(11), article(12)
    f1 = write(tmp_path / "one.parquet", [("a", a), ("b", b), ("a2", edit(a, 2, 3))])
    f2 = write(tmp_path / "two.parquet", [("b2", b, "2024-01-01"), ("c", article(13))])
    base = "memory://dedup-url-test"
    storage.rmtree(base)
    urls = []
    for f in (f1, f2):
        storage.upload(f, storage.join(base, "in", os.path.basename(f)))
        urls.append(storage.join(base, "in", os.path.basename(f)))
    local = run_dedup([f1, f2], tmp_path / "local", DedupConfig(), INLINE)
    monkeypatch.setenv("CRAWLMIX_SCRATCH", str(tmp_path / "scratch"))
    remote = run_dedup(urls, storage.join(base, "out"), DedupConfig(), INLINE)
    assert remote == {**local, "per_file": remote["per_file"]} and remote["per_file"] == local["per_file"]
    assert remote["dropped"] == {"exact": 1, "minhash": 1}
    for folder in ("curated", "removed"):
        here = sorted(p.name for p in (tmp_path / "local" / folder).glob("*.parquet"))
        there = sorted(storage.name(p) for p in storage.iglob(storage.join(base, "out", folder, "*.parquet")))
        assert here == there and len(here) == 2
        for n in here:
            assert storage.read_bytes(storage.join(base, "out", folder, n)) == (tmp_path / "local" / folder / n).read_bytes()
    assert list(storage.iglob(storage.join(base, "out", "_dedup", "sig", "*.parquet")))
    assert list(storage.iglob(storage.join(base, "out", "_dedup", "edges", "*.npy")))
    assert not [p for p in (tmp_path / "scratch").rglob("*") if p.is_file()]  # downloads and uploads cleaned up
    rerun = run_dedup(urls, storage.join(base, "out"), DedupConfig(), INLINE)  # signatures resumed from markers
    assert rerun["in"] == remote["in"] and rerun["out"] == remote["out"]

    # the entry point: a run folder URL as input (its curated/), refused until that run has finished
    from crawlmix.dedup.job import main
    from crawlmix.runtime import runstate

    run = storage.join(base, "run")
    for f in (f1, f2):
        storage.upload(f, storage.join(run, "curated", os.path.basename(f)))
    runstate.begin(run, {"job": "t"})
    argv = ["--input", run, "--output", storage.join(base, "again"), "--workers", "1", "--no-progress"]
    assert main(argv) == 2  # still 'running'
    runstate.finish(run, {"job": "t"})
    assert main(argv) == 0
    assert runstate.read_state(storage.join(base, "again"))[0] == "finished"
    assert storage.read_json(storage.join(base, "again", "stats.json"))["dedup"]["out"] == local["out"]
    storage.rmtree(base)


def test_candidate_tasks_grouped_or_one_band_each_give_the_same_output(tmp_path, monkeypatch):
    """A candidate task may take several bands (fewer reads of each signature file): the edges and the
    outputs are those of one task per band."""
    from crawlmix.dedup import job

    a, b = article(21, 200), article(22, 200)
    files = [write(tmp_path / f"in{k}.parquet", [(f"a{k}", edit(a, k, k)), (f"b{k}", edit(b, k + 1, k)),
                                                 (f"u{k}", article(30 + k))]) for k in range(3)]
    seen = {}
    for mode, groups in (("one", lambda cols, docs, workers: [[c] for c in cols]),
                         ("all", lambda cols, docs, workers: [cols])):
        monkeypatch.setattr(job, "column_groups", groups)
        out = tmp_path / mode
        stats = run_dedup(files, out, DedupConfig(), INLINE)
        edges = {p.name: np.load(p).tolist() for p in sorted((out / "_dedup" / "edges").glob("*.npy"))}
        seen[mode] = (_outputs(out), edges, stats["clusters"])
    assert seen["one"][2] == 2 and any(seen["one"][1].values())  # the data has duplicates to find
    assert seen["one"] == seen["all"]


def test_column_groups_keep_workers_busy_within_the_memory_bound():
    from crawlmix.dedup.clusters import column_groups

    cols = [f"band_{j}" for j in range(14)] + ["exact", "url"]
    small = column_groups(cols, docs=1_000, workers=2)
    assert len(small) == 2 and sorted(sum(small, [])) == sorted(cols)  # few docs: one task per worker
    big = column_groups(cols, docs=100_000_000, workers=2, task_bytes=1 << 30)
    assert len(big) == 16 and all(len(g) == 1 for g in big)  # 4 GB per band: one band per task
    mid = column_groups(cols, docs=10_000_000, workers=2, task_bytes=1 << 30)
    assert all(len(g) * 40 * 10_000_000 <= 1 << 30 for g in mid) and sorted(sum(mid, [])) == sorted(cols)
