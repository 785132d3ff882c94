"""The mixer (crawlmix/mix, pipelines/mix.py): exact per-shard ratios, byte-identical reruns whatever the
executor backend, resume from completion markers, readers, validation."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from crawlmix.mix.config import load_mixture, parse_mixture
from crawlmix.mix.job import main as mix_main
from crawlmix.mix.job import run
from crawlmix.runtime.config import ConfigError
from tests.conftest import ROOT
from tests.mix.mixtree import import_wids as _import_wids
from tests.mix.mixtree import texts as _texts
from tests.mix.mixtree import write_tree


@pytest.fixture(scope="session")
def tree(tmp_path_factory) -> Path:
    """A source tree laid out like the repo: sample/media/* (small scale) and output/sample-crawl/curated."""
    return write_tree(tmp_path_factory.mktemp("mixroot"), scale=0.5)


def base_mix(**stage_over) -> dict:
    stage = {"name": "s1", "budget": {"samples": 300}, "shards": {"max_samples": 37},
             "sources": [
                 {"name": "img", "modality": "image", "path": "sample/media/photos.tar", "weight": 0.35, "max_epochs": 4},
                 {"name": "web", "modality": "text", "path": "output/sample-crawl/curated/*.parquet", "weight": 0.20,
                  "max_epochs": 2},
                 {"name": "vid", "modality": "video", "path": "sample/media/video.tar", "weight": 0.33, "max_epochs": 4},
                 {"name": "multi", "modality": "multi-image", "path": "sample/media/multi-image.tar", "weight": 0.12,
                  "max_epochs": 2},
             ]}
    stage.update(stage_over)
    return {"name": "t", "seed": 3, "stages": [stage]}


def build(raw: dict, root: Path, out: Path, **kw):
    return run(parse_mixture(raw), out, root, progress=False, **kw)


def shard_sources(tar_path: Path) -> list[str]:
    """Per sample (in order), the source named in its .json, read from the tar itself."""
    out = []
    with tarfile.open(tar_path) as tf:
        for m in tf:
            if m.name.endswith(".json"):
                out.append(json.loads(tf.extractfile(m).read())["source"])
    return out


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("mix1")
    res = build(base_mix(), tree, out)
    return out, res


def test_ratios_exact_in_every_shard(built):
    out, res = built
    weights = {"img": 0.35, "web": 0.20, "vid": 0.33, "multi": 0.12}
    shards = sorted((out / "s1").glob("shard-*.tar"))
    assert len(shards) == 9  # 300 samples / 37 per shard
    total = Counter()
    for p in shards:
        got = Counter(shard_sources(p))
        n = sum(got.values())
        for name, w in weights.items():
            assert abs(got[name] - w * n) < 1, (p.name, name, got[name], w * n)
        stats = json.loads(p.with_name(p.name[:-4] + ".stats.json").read_text())
        assert {k: v["samples"] for k, v in stats["sources"].items()} == dict(got)
        total.update(got)
    assert sum(total.values()) == 300
    for name, w in weights.items():
        assert abs(total[name] - w * 300) <= 1
    lock = json.loads((out / "s1" / "mix.lock.json").read_text())
    assert {k: v["samples"] for k, v in lock["sources"].items()} == dict(total)
    assert lock["max_shard_deviation"] < 1
    assert lock["modalities"]["video"]["target_share"] == pytest.approx(0.33)


def test_within_shard_interleaving_is_even(built):
    """Sources are spread through a shard, not written in blocks: any 10 consecutive samples hold >= 2 videos."""
    out, _ = built
    seq = shard_sources(out / "s1" / "shard-000000.tar")
    for i in range(len(seq) - 10):
        assert seq[i:i + 10].count("vid") >= 2, seq


def test_readers_load_the_shards(built):
    """The default (uniform) layout: every sample has .txt, .json and .images.tar (its images as a nested tar)."""
    import webdataset as wds
    from PIL import Image

    from crawlmix.mix.read import nested_members

    out, _ = built
    ds = wds.WebDataset(str(out / "s1" / "shard-{000000..000008}.tar"), shardshuffle=False).decode("pil")
    n, mods, keys = 0, Counter(), set()
    for s in ds:
        n += 1
        assert "." not in s["__key__"]
        assert set(s) - {"__key__", "__url__", "__local_path__"} == {"txt", "json", "images.tar"}
        keys.add(s["__key__"])
        meta = s["json"]
        mods[meta["modality"]] += 1
        assert meta["provenance"]["mixture"] == "t" and meta["provenance"]["seed"] == 3
        nested = nested_members(s["images.tar"])
        assert meta["images"] == len(nested)
        if meta["modality"] == "text":
            assert s["txt"] and meta["url"].startswith("https://ex") and meta["language"] in ("en", "de", "fr")
            assert meta["provenance"]["input"]["config_hash"] == "abc123"  # the crawl's own provenance travels on
            assert s["images.tar"] == b""
        elif meta["modality"] == "image":
            assert [k for k, _ in nested] == ["0.jpg"] and s["txt"].startswith("A photo of")
            assert Image.open(io.BytesIO(nested[0][1])).size == (128, 96)
            assert meta["provenance"]["input"] == {"config_hash": "", "crawlmix_version": "", "seed": ""}
        elif meta["modality"] == "video":
            assert [k for k, _ in nested] == [f"{i}.jpg" for i in range(8)]
            assert json.loads(meta["meta"])["fps"] == 4
        else:
            assert 2 <= len(nested) <= 3 and all(k.endswith(".jpg") for k, _ in nested)
    assert n == 300 and len(keys) == 300
    assert mods == {"image": 105, "text": 60, "video": 99, "multi-image": 36}

    wids = _import_wids()
    d = wids.ShardListDataset(str(out / "s1" / "shardindex.json"), cache_dir=str(out / "_wids_cache"))
    assert len(d) == 300
    for i in (0, 37, 150, 299):
        s = d[i]
        assert s["__key__"] == f"{i:010d}"
        assert json.loads(s[".json"].read()) if hasattr(s[".json"], "read") else s[".json"]


def _files(d: Path) -> dict:
    """Every output file's bytes (completion markers apart: they carry the config hash, compared by name)."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()
            and "_wids_cache" not in p.parts and "_tasks" not in p.parts}


def _markers(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("_tasks/*"))


def test_byte_identical_rerun_and_seed_matters(tree, built, tmp_path):
    out, _ = built
    build(base_mix(), tree, tmp_path / "again")
    a, b = _files(out), _files(tmp_path / "again")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), [k for k in a if a[k] != b.get(k)]
    raw = base_mix()
    raw["seed"] = 4
    build(raw, tree, tmp_path / "seed4")
    assert (tmp_path / "seed4" / "s1" / "shard-000000.tar").read_bytes() != a["s1/shard-000000.tar"]
    with tarfile.open(out / "s1" / "shard-000000.tar") as tf:  # fixed metadata in every header
        assert {(m.mtime, m.uid, m.gid, m.mode, m.uname) for m in tf} == {(0, 0, 0, 0o444, "crawlmix")}


def test_resume_writes_only_missing_shards(tree, built, tmp_path):
    """A shard is finished when its completion marker (written after the tar and its stats) is there, names
    this stage and plan, and its tar has the recorded size; a rerun writes only the other shards."""
    import shutil

    src, _ = built
    assert _markers(src) == [f"s1/_tasks/shard-{i:06d}.json" for i in range(9)]
    marker = json.loads((src / "s1" / "_tasks" / "shard-000004.json").read_text())
    lock = json.loads((src / "s1" / "mix.lock.json").read_text())
    assert marker["config_hash"] == lock["stage_hash"] and marker["plan"] == lock["shard_plans"][4]
    out = tmp_path / "resume"
    shutil.copytree(src, out)
    d = out / "s1"
    for i in (3, 5, 6):  # interrupted before these markers were written
        (d / "_tasks" / f"shard-{i:06d}.json").unlink()
    (d / "shard-000003.tar").unlink()  # ... before this shard was published
    (d / "shard-000003.stats.json").unlink()
    (d / "shard-000005.stats.json").unlink()  # ... between the tar and its stats; 6: between the stats and the marker
    with open(d / "shard-000007.tar", "r+b") as f:  # a marked shard damaged afterwards
        f.truncate(1000)
    (d / "shard-000008.tar.tmp").write_bytes(b"junk")
    before = {p.name: p.stat().st_mtime_ns for p in d.glob("shard-*.tar")}
    res = build(base_mix(), tree, out)
    assert res[0]["written"] == 4 and res[0]["skipped"] == 5
    for name, t in before.items():
        if name not in ("shard-000005.tar", "shard-000006.tar", "shard-000007.tar"):
            assert (d / name).stat().st_mtime_ns == t, name
    assert not list(d.glob("*.tmp"))
    a, b = _files(src), _files(out)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert _markers(out) == _markers(src)
    # a marker of another stage hash does not count
    m = d / "_tasks" / "shard-000002.json"
    m.write_text(json.dumps(dict(json.loads(m.read_text()), config_hash="other")))
    assert build(base_mix(), tree, out)[0]["written"] == 1
    # another mixture into the same folder is refused, unless --overwrite (which clears the markers)
    raw = base_mix()
    raw["seed"] = 9
    with pytest.raises(ConfigError, match="another mixture"):
        build(raw, tree, out)
    res = build(raw, tree, out, overwrite=True)
    assert res[0]["written"] == 9 and res[0]["skipped"] == 0
    assert (d / "shard-000000.tar").read_bytes() != a["s1/shard-000000.tar"]
    lock = json.loads((d / "mix.lock.json").read_text())
    assert {json.loads(p.read_text())["config_hash"] for p in (d / "_tasks").iterdir()} == {lock["stage_hash"]}


def test_failed_shard_is_reported_and_redone(tree, built, tmp_path, monkeypatch):
    """A shard write that fails leaves no tar and no marker; the others are written and marked, the run
    raises naming the shard, and the rerun writes just that one."""
    import crawlmix.mix.job as job
    from crawlmix.runtime.executor import TaskError

    src, _ = built
    real = job.write_shard

    def flaky(stage_dir, name, *a):
        if name == "shard-000004.tar":
            raise OSError("disk full")
        return real(stage_dir, name, *a)

    monkeypatch.setattr(job, "write_shard", flaky)
    out = tmp_path / "flaky"
    with pytest.raises(TaskError, match=r"1 shard\(s\) of stage 's1' failed.*shard-000004\.tar: OSError: disk full"):
        build(base_mix(), tree, out, threads=1)
    assert not (out / "s1" / "shard-000004.tar").exists()
    assert len(_markers(out)) == 8 and "s1/_tasks/shard-000004.json" not in _markers(out)
    monkeypatch.setattr(job, "write_shard", real)
    res = build(base_mix(), tree, out)
    assert res[0]["written"] == 1 and res[0]["skipped"] == 8
    a, b = _files(src), _files(out)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def test_max_bytes_limits_shards_and_keeps_ratios(tree, tmp_path):
    raw = base_mix(budget={"samples": 120}, shards={"max_samples": 50, "max_bytes": 60_000})
    res = build(raw, tree, tmp_path)
    lock = res[0]["lock"]
    assert lock["max_shard_deviation"] < 1
    for p in sorted((tmp_path / "s1").glob("*.tar")):
        st = json.loads(p.with_name(p.name[:-4] + ".stats.json").read_text())
        assert p.stat().st_size == st["bytes"] and (st["bytes"] <= 60_000 or st["samples"] == 1)
    assert lock["shards"] > 3 and lock["samples"] == 120


def test_token_budget_with_local_tokenizer_json(tree, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(_texts(50, 0), trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    raw = {"name": "txt", "seed": 1, "tokens": {"tokenizer": str(tmp_path / "tokenizer.json")},
           "stages": [{"name": "pre", "budget": {"tokens": 4000}, "shards": {"max_samples": 8},
                       "sources": [
                           {"name": "en", "modality": "text", "path": "output/sample-crawl/curated",
                            "languages": ["en"], "weight": 0.5, "max_epochs": 3},
                           {"name": "book", "modality": "text", "path": "sample/media/textbook.jsonl", "weight": 0.5}]}]}
    res = build(raw, tree, tmp_path / "out")
    lock = res[0]["lock"]
    assert lock["tokenizer"] == str(tmp_path / "tokenizer.json")
    recount, biggest = 0, 0
    for p in sorted((tmp_path / "out" / "pre").glob("*.tar")):
        with tarfile.open(p) as tf:
            for m in tf:
                if m.name.endswith(".txt"):
                    n = len(tok.encode(tf.extractfile(m).read().decode(), add_special_tokens=False).ids)
                    recount += n
                    biggest = max(biggest, n)
                elif m.name.endswith(".json"):
                    assert json.loads(tf.extractfile(m).read())["language"] == "en"
    assert recount == lock["tokens"]
    assert 4000 <= lock["tokens"] < 4000 + 2 * biggest


def test_builtin_whitespace_matches_tokenizers_pretokenizer():
    from tokenizers.pre_tokenizers import Whitespace

    from crawlmix.mix.tokens import TokenCounter
    from crawlmix.mix.config import TokenConfig

    texts = ["Hello, world! It's 3.14 -- ok?", "Ünïcode wörds 日本語 and tabs\tand\nnewlines...", ""]
    got = TokenCounter(TokenConfig()).count(texts)
    assert list(got) == [len(Whitespace().pre_tokenize_str(t)) for t in texts]


def test_builtin_counts_match_the_regex_on_any_unicode():
    """builtin:whitespace is counted with NumPy over character classes; it must equal re.findall exactly
    (\\w = isalnum or '_', \\s = isspace), whatever the script; builtin:bytes equals len(t.encode())."""
    import random
    import re

    from crawlmix.mix.tokens import TokenCounter
    from crawlmix.mix.config import TokenConfig

    rng = random.Random(0)
    pool = ("abcXYZ019_ .,;:!?'\"-\t\n\r\x0b\x0c\x1c\x85\xa0\u1680\u2028\u3000éßÆ½²٣߁٫ँ̈日本語中文"
            "한국어Ελληνικάрусский\u200b\u200d\ufeff😀🇩🇪𝔘𝟘\U0001f3fd\ud800")
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 60))) for _ in range(400)] + ["", " ", "a"]
    ws = re.compile(r"\w+|[^\w\s]+")
    assert list(TokenCounter(TokenConfig()).count(texts)) == [len(ws.findall(t)) for t in texts]
    clean = [t.replace("\ud800", "") for t in texts]
    assert list(TokenCounter(TokenConfig(tokenizer="builtin:bytes")).count(clean)) == [len(t.encode()) for t in clean]


def _tar(path: Path, members: list, fmt=tarfile.USTAR_FORMAT) -> None:
    with tarfile.open(path, "w", format=fmt) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            if data is None:
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))


@pytest.mark.parametrize("layout", ["source", "uniform"])
def test_members_are_copied_byte_for_byte_from_any_tar(tmp_path, layout):
    """Shards are assembled from tar headers and byte ranges: payload members must come out exactly as they
    went in, from plain USTAR tars (read without a walk) and from GNU / pax tars with folders, long names
    and directories (walked), with a member larger than a write chunk and a member whose padding is not
    zero; padding comes out zero, every .json is canonical, the recorded md5 is the file's. Layout 'source'
    copies the members as they are; 'uniform' puts the non-text ones into the sample's .images.tar (by
    position, in source order) and the text into .txt."""
    import hashlib

    from crawlmix.mix.read import nested_members

    rng = np.random.default_rng(1)
    blob = lambda n: rng.integers(0, 256, n, dtype=np.uint8).tobytes()  # noqa: E731
    want = {}  # source key -> {ext: bytes}
    plain = []
    for i in range(12):
        key = f"p{i:03d}"
        m = {"jpg": blob(int(rng.integers(1, 3000))), "txt": f"caption {i} ünï".encode(),
             "json": json.dumps({"id": key, "url": f"https://x/{i}.jpg", "score": 0.1 * i, "tags": ["a", {"z": i}],
                                 "big": 1e-05 * i, "lang": "日本"}).encode()}
        if i == 3:
            m["0.png"], m["1.png"] = blob(4_500_000), blob(700)  # larger than a write chunk
        want[key] = {k: v for k, v in m.items() if k != "json"}
        plain += [(f"{key}.{e}", d) for e, d in m.items()]
    _tar(tmp_path / "plain.tar", plain)
    raw = bytearray((tmp_path / "plain.tar").read_bytes())  # dirty the padding after p005.jpg
    with tarfile.open(tmp_path / "plain.tar") as tf:
        mem = tf.getmember("p005.jpg")
    end = mem.offset_data + mem.size
    assert end % 512
    raw[end:end + 3] = b"xyz"
    (tmp_path / "plain.tar").write_bytes(bytes(raw))
    walked = [("dir", None)]
    for i in range(8):
        key = ("sub/deep/" if i % 2 else "") + f"w{i:03d}" + ("_" + "L" * 120 if i == 4 else "")
        m = {"jpg": blob(int(rng.integers(0, 1500))), "json": json.dumps({"n": i, "f": float("nan") if i == 2 else 1.5})
             .encode()}
        want[key.replace("/", "_")] = {"jpg": m["jpg"]}
        walked += [(f"{key}.{e}", d) for e, d in m.items()]
    _tar(tmp_path / "walked.tar", walked, tarfile.GNU_FORMAT)
    raw = {"name": "bytes", "seed": 1, "output": {"layout": layout},
           "stages": [{"name": "s", "budget": {"samples": 40}, "shards": {"max_samples": 9},
           "sources": [{"name": "plain", "modality": "image", "path": str(tmp_path / "plain.tar"), "weight": 0.6,
                        "max_epochs": 2},
                       {"name": "walked", "modality": "image", "path": str(tmp_path / "walked.tar"), "weight": 0.4,
                        "max_epochs": 2}]}]}
    res = build(raw, tmp_path, tmp_path / "out")
    assert res[0]["lock"]["samples"] == 40
    seen = set()
    for p in sorted((tmp_path / "out" / "s").glob("shard-*.tar")):
        data = p.read_bytes()
        st = json.loads(p.with_name(p.name[:-4] + ".stats.json").read_text())
        assert st["md5"] == hashlib.md5(data).hexdigest() and st["bytes"] == len(data)
        samples: dict = {}
        with tarfile.open(p) as tf:
            for m in tf:
                assert m.mode == 0o444 and m.mtime == 0 and m.uname == "crawlmix"
                pad = data[m.offset_data + m.size:m.offset_data + (m.size + 511) // 512 * 512]
                assert pad == bytes(len(pad)), m.name
                key, ext = m.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
        for key, members in samples.items():
            js = members.pop("json")
            meta = json.loads(js)
            assert js == json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
            src_key = meta["provenance"]["index"]
            exp = want[src_key]
            if layout == "uniform":
                assert set(members) == {"txt", "images.tar"} and meta["images"] == sum(e != "txt" for e in exp)
                assert members["txt"] == exp.get("txt", b"")
                assert nested_members(members["images.tar"]) == [
                    (f"{i}.{e.rsplit('.', 1)[-1]}", v) for i, (e, v) in enumerate(x for x in exp.items() if x[0] != "txt")]
            else:
                assert members == exp, (key, src_key)
            seen.add(src_key)
    assert len(seen) == 20  # every sample of both sources, the big one and the dirty-padded one included


def test_media_sample_is_deterministic_and_small(tmp_path):
    from crawlmix.samples.media_sample import write_media_sample

    write_media_sample(tmp_path / "a", scale=0.2)
    write_media_sample(tmp_path / "b", scale=0.2)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    full = sum(v["samples"] for v in json.loads((tmp_path / "a" / "MEDIA_MANIFEST.json").read_text())["files"].values())
    assert full > 50


# ------------------------------------------------------------------------------------------ validation
def _bad(tree, tmp_path, raw, match):
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=match) as e:
        build(raw, tree, out)
    assert not out.exists(), "nothing may be written before the mixture is validated"
    return str(e.value)


def test_weights_summing_to_108_percent_fail_with_sum_and_names(tree, tmp_path):
    raw = base_mix()
    raw["stages"][0]["sources"][3]["weight"] = 0.20  # the seed's 35/20/33/20
    msg = _bad(tree, tmp_path, raw, r"weights sum to 1\.08 \(108%\)")
    assert all(n in msg for n in ("img 0.35", "web 0.2", "vid 0.33", "multi 0.2", "normalize: true"))
    raw["normalize"] = True
    raw["stages"][0]["sources"][3]["max_epochs"] = 3
    res = build(raw, tree, tmp_path / "norm")
    assert res[0]["lock"]["sources"]["multi"]["target_share"] == pytest.approx(0.2 / 1.08)


@pytest.mark.parametrize("edit, match", [
    (lambda r: r["stages"][0]["sources"][0].update(wieght=1), r"stages\.s1\.sources\.img\.wieght: unknown key"),
    (lambda r: r.update(shards=1), r"shards: unknown key"),
    (lambda r: r["stages"][0]["sources"][1].update(weight=-0.2), r"sources\.web\.weight: Input should be greater"),
    (lambda r: r["stages"][0]["sources"][2].update(name="img"), r"duplicate source name 'img'"),
    (lambda r: r["stages"][0]["sources"][2].update(modality="audio"), r"sources\.vid\.modality"),
    (lambda r: r["stages"][0].update(budget={"samples": 10, "tokens": 10}), r"exactly one of"),
    (lambda r: r["stages"][0]["sources"][0].update(name="a.b"), r"no dots"),
    (lambda r: r.update(tokens={"tokenizer": "/nonexistent/tokenizer.json"}), r"tokens\.tokenizer: no tokenizer"),
])
def test_config_errors_name_the_field(tree, tmp_path, edit, match):
    raw = base_mix()
    edit(raw)
    _bad(tree, tmp_path, raw, match)


def test_missing_path(tree, tmp_path):
    raw = base_mix()
    raw["stages"][0]["sources"][2]["path"] = "sample/media/nope-*.tar"
    _bad(tree, tmp_path, raw, r"source 'vid': path 'sample/media/nope-\*\.tar' matches no file")


def test_empty_source(tree, tmp_path):
    raw = base_mix()
    raw["stages"][0]["sources"][1]["languages"] = ["xx"]
    _bad(tree, tmp_path, raw, r"source 'web' is empty: 0 samples in 2 file\(s\) after the languages filter")
    (tmp_path / "empty.tar").write_bytes(b"")
    raw = base_mix()
    raw["stages"][0]["sources"][2]["path"] = str(tmp_path / "empty.tar")
    _bad(tree, tmp_path, raw, r"source 'vid' is empty")


def test_corrupt_tar(tree, tmp_path):
    good = (tree / "sample" / "media" / "video.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(good[:len(good) // 2 + 100])
    raw = base_mix()
    raw["stages"][0]["sources"][2]["path"] = str(tmp_path / "cut.tar")
    _bad(tree, tmp_path, raw, r"source 'vid': corrupt tar .*cut\.tar")
    (tmp_path / "garbage.tar").write_bytes(b"\x89PNG not a tar at all" * 100)
    raw["stages"][0]["sources"][2]["path"] = str(tmp_path / "garbage.tar")
    _bad(tree, tmp_path, raw, r"source 'vid': corrupt tar .*garbage\.tar")


def test_source_too_small_for_its_share(tree, tmp_path):
    raw = base_mix()
    raw["stages"][0]["sources"][1]["max_epochs"] = 1  # 50 docs, but 20% of 300 = 60 draws
    _bad(tree, tmp_path, raw, r"source 'web' is too small for its share: weight 0\.2 of 300 samples needs ~60 "
                              r"draws, but it has 50 samples x max_epochs 1 = 50 allowed")


def test_yaml_file_errors(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("name: x\nstages: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_mixture(p)
    with pytest.raises(ConfigError, match="no such mixture file"):
        load_mixture(tmp_path / "missing.yaml")


# ------------------------------------------------------------------------------------------ shipped mixtures / CLI
@pytest.mark.parametrize("name", ["smolvlm-vision", "smolvlm-video", "text-pretrain"])
def test_shipped_mixtures_validate(name):
    mix = load_mixture(ROOT / "mixtures" / f"{name}.yaml")
    assert mix.stages and all(s.bundled for st in mix.stages for s in st.sources)


def test_video_stage_cli_prints_target_vs_realised(tree, tmp_path, capsys):
    """The shipped video stage (image 35 / text 20 / video 33 / multi-image 12) on a sample-like tree."""
    raw = yaml.safe_load((ROOT / "mixtures" / "smolvlm-video.yaml").read_text())
    raw["stages"][0]["budget"]["samples"] = 200  # the tree holds the media sample at half scale
    for s in raw["stages"][0]["sources"]:
        s["max_epochs"] = 4
    p = tmp_path / "video.yaml"
    p.write_text(yaml.safe_dump(raw))
    rc = mix_main(["--mixture", str(p), "--output", str(tmp_path / "o"), "--root", str(tree), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.split() and ln.split()[0] in
            ("image", "text", "video", "multi-image")}
    assert {k: (v[1], v[2]) for k, v in rows.items()} == {
        "image": ("35.00%", "35.00%"), "text": ("20.00%", "20.00%"), "video": ("33.00%", "33.00%"),
        "multi-image": ("12.00%", "12.00%")}
    assert "clips" in out and "worst shard deviation" in out
    rc = mix_main(["--mixture", str(p), "--output", str(tmp_path / "o"), "--root", str(tree), "--no-progress"])
    assert rc == 0 and "wrote 0 shard(s), kept 2 finished" in capsys.readouterr().out
    # --parquet later: the Parquet forms are not part of the mixture hash, so the same shards are rewritten
    # once with them (the tars byte for byte as before), then kept
    tars = {q.name: q.read_bytes() for q in (tmp_path / "o" / "video").glob("*.tar")}
    args = ["--mixture", str(p), "--output", str(tmp_path / "o"), "--root", str(tree), "--no-progress", "--parquet"]
    assert mix_main(args) == 0 and "wrote 2 shard(s), kept 0 finished" in capsys.readouterr().out
    assert {q.name: q.read_bytes() for q in (tmp_path / "o" / "video").glob("*.tar")} == tars
    assert len(list((tmp_path / "o" / "video").glob("shard-*.parquet"))) == 2
    assert mix_main(args) == 0 and "wrote 0 shard(s), kept 2 finished" in capsys.readouterr().out


def test_cli_errors_exit_2_and_help(tmp_path, capsys):
    raw = base_mix()
    raw["stages"][0]["sources"][0]["weight"] = 0.5
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw))
    assert mix_main(["--mixture", str(p), "--output", str(tmp_path / "o")]) == 2
    assert "weights sum to 1.15 (115%)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        mix_main(["--help"])
    assert e.value.code == 0 and "--mixture" in capsys.readouterr().out


def test_ray_writes_the_same_bytes(tree, built, tmp_path):
    """--ray: shards written as Ray tasks (a local Ray with 2 CPUs) equal the in-process ones byte for byte."""
    import ray

    src, _ = built
    try:
        res = build(base_mix(), tree, tmp_path / "ray", use_ray=True, workers=2)
    finally:
        ray.shutdown()
    assert res[0]["written"] == 9
    a, b = _files(src), _files(tmp_path / "ray")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert _markers(tmp_path / "ray") == _markers(src)


def test_same_bytes_without_orjson(tree, built, tmp_path, monkeypatch):
    """orjson only speeds up JSON: without it the standard library gives the same shards."""
    import crawlmix.mix.members as mj

    monkeypatch.setattr(mj, "_orjson", None)
    src, _ = built
    build(base_mix(), tree, tmp_path / "std")
    a, b = _files(src), _files(tmp_path / "std")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)


@pytest.mark.parametrize("workers, threads", [(2, 1), (1, 1), (1, 3)])
def test_forked_workers_and_threads_write_the_same_bytes(tree, built, tmp_path, workers, threads):
    """--workers (the executor's fork process pool), --threads 1 (inline) and --threads 3 (its threads)."""
    src, _ = built
    res = build(base_mix(), tree, tmp_path / "w", workers=workers, threads=threads)
    assert res[0]["written"] == 9
    a, b = _files(src), _files(tmp_path / "w")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert _markers(tmp_path / "w") == _markers(src)
