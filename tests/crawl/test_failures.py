"""Planted PII, a killed driver and a task that fails past its retries, each with real processes (the crawl
entry point on a local Ray; the mixer and dedup entry points; the dashboard's reader).

The inputs: planted.warc.gz holds a page with an e-mail address and two phone numbers in its text, its URL,
an <img alt> and a <figcaption> (plus the image, captured), a record whose URL carries the e-mail (unparsable:
an error record and a removed row quote it) and a URL-filtered page with the e-mail in its URL; other.warc.gz
an ordinary page with a picture. Crashes are real: CRAWLMIX_FAILPOINT makes the named process SIGKILL itself
at that point (crawlmix.runtime.runstate.failpoint); the driver is started in its own process group, and what
is left of that group (Ray's agents) is killed by group id afterwards.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, quote_plus

import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT

EMAIL, PHONE1, PHONE2 = "jane.roe@example.org", "+1 415-555-0147", "(020) 7946 0321"
PAGE_URL = "https://people.example.com/team/jane.roe@example.org?phone=%2B1%20415-555-0147&tel=020-7946-0321"
OTHER_URL = "https://garden.example.com/2024/roses.html"


def forms() -> set[str]:
    """Every way the planted values could be written: raw, percent-encoded, digits only, pieces."""
    out = set()
    for v in (EMAIL, PHONE1, PHONE2, "415-555-0147", "7946 0321", "020-7946-0321"):
        out |= {v, quote(v, safe=""), quote_plus(v), v.replace(" ", "%20")}
    out |= {"4155550147", "2079460321", "jane.roe%40example.org", "jane.roe&#64;", "jane.roe\\u0040"}
    return out


def _warcs(d: Path) -> tuple[str, str]:
    from crawlmix.samples.crawl_sample import EN, _gz, _html, _http, _image, _warc_record
    import random

    rng = random.Random(5)
    fig = (f'<figure><img src="/img/jane.jpg" alt="Portrait of Jane Roe, {EMAIL}, {PHONE1}">'
           f"<figcaption>Jane Roe at her desk in the London office; call {PHONE2} or write to {EMAIL}."
           f"</figcaption></figure>")
    planted = {"url": PAGE_URL, "charset": "utf-8", "status": 200, "ctype": "text/html",
               "html": _html("Our team", EN[0:4] + [f"Write to {EMAIL} or call {PHONE1}; the London office "
                                                    f"answers on {PHONE2} every weekday morning."], "en", "utf-8", fig)}
    blocked = {"url": f"https://free-xxx-casino.example.net/win?email={EMAIL}", "charset": "utf-8", "status": 200,
               "ctype": "text/html", "html": _html("Win", EN[8:10], "en", "utf-8")}
    other = {"url": OTHER_URL, "charset": "utf-8", "status": 200, "ctype": "text/html",
             "html": _html("Roses", EN[4:8], "en", "utf-8",
                           '<figure><img src="/img/rose.jpg" alt="A red rose in the garden">'
                           "<figcaption>The first roses of the summer in the walled garden.</figcaption></figure>")}

    def image(url, topic):
        data = _image(topic, 1, "JPEG", 5)
        http = f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data
        return _gz(_warc_record("response", url, http, rng, "application/http; msgtype=response"))

    def page(p):
        return _gz(_warc_record("response", p["url"], _http(p), rng, "application/http; msgtype=response"))

    a, b = d / "planted.warc.gz", d / "other.warc.gz"
    a.write_bytes(page(planted) + page(blocked)
                  + _gz(_warc_record("response", f"https://people.example.com/broken?email={quote(EMAIL)}",
                                     b"not an HTTP response", rng, "application/http; msgtype=response"))
                  + image("https://people.example.com/img/jane.jpg", "portrait"))
    b.write_bytes(page(other) + image("https://garden.example.com/img/rose.jpg", "rose"))
    return str(a), str(b)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return _warcs(tmp_path_factory.mktemp("planted"))


def crawl(out: Path, inputs, failpoint: str | None = None, timeout=600):
    """The crawl entry point in its own process group; whatever of the group outlives it is killed."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CRAWLMIX_FAILPOINT")}
    env["RAY_AUTH_MODE"] = "token"
    if failpoint:
        env["CRAWLMIX_FAILPOINT"] = failpoint
    p = subprocess.Popen([sys.executable, str(ROOT / "pipelines" / "crawl.py"), "--no-progress", "--workers", "2",
                          "--output", str(out), *(x for i in inputs for x in ("--input", i))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        stdout, stderr = p.communicate(timeout=timeout)
    finally:
        _kill_group(p.pid)
    return p.returncode, stdout, stderr


def _kill_group(pgid: int) -> None:
    for _ in range(50):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _cells(value) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def leaks(out: Path) -> list[str]:
    """Every file under ``out`` where a planted value appears in any form: raw bytes, Parquet cells and
    metadata (temporary files included), tar members, JSON."""
    found, needles = [], forms()
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        texts = [f.read_bytes().decode("utf-8", "replace")]
        if ".parquet" in f.name:
            try:
                pf = pq.ParquetFile(f)
                texts += [_cells(pf.read().to_pylist()), _cells({k.decode(): v.decode("utf-8", "replace")
                                                                 for k, v in (pf.schema_arrow.metadata or {}).items()})]
            except Exception as e:  # noqa: BLE001 - an unfinished .tmp: its raw bytes were read above
                texts.append(f"unreadable {type(e).__name__}")
        if f.name.endswith(".tar"):
            with tarfile.open(f) as tar:
                texts += [tar.extractfile(m).read().decode("utf-8", "replace") for m in tar if m.isfile()]
        for t in texts:
            hit = next((n for n in needles if n in t or n.lower() in t.lower()), None)
            if hit:
                found.append(f"{f.relative_to(out)}: {hit!r}")
                break
    return found


def outputs(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for sub in ("curated", "removed", "pairs") for p in sorted((out / sub).glob("*"))
            if p.is_file() and p.suffix in (".parquet", ".tar")}


def mix(crawl_dir: Path, tmp: Path, pairs: bool = False):
    src = [f"      - {{name: web, modality: text, path: {crawl_dir}/curated/*.parquet, weight: {0.5 if pairs else 1}}}"]
    if pairs:
        src.append(f"      - {{name: pairs, modality: image, path: {crawl_dir}/pairs/*.tar, weight: 0.5}}")
    m = tmp / f"mix-{crawl_dir.name}.yaml"
    head = "name: t\nseed: 1\nstages:\n  - name: s\n    budget: {samples: 2}\n    sources:\n"
    m.write_text(head + "\n".join(src) + "\n")
    return subprocess.run([sys.executable, str(ROOT / "pipelines" / "mix.py"), "--mixture", str(m), "--no-progress",
                           "--output", str(tmp / f"mixed-{crawl_dir.name}")], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def clean(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "crawl"
    rc, stdout, stderr = crawl(out, inputs)
    assert rc == 0, stderr[-3000:]
    return out


def test_planted_pii_is_in_no_file_and_the_page_is_kept(clean, tmp_path):
    assert leaks(clean) == []
    stats = json.loads((clean / "stats.json").read_text())
    assert stats["status"] == "finished" and stats["failed_tasks"] == []
    curated = pq.read_table(clean / "curated").to_pylist()
    page = next(r for r in curated if r["url"].startswith("https://people.example.com/team/"))
    assert page["url"] == ("https://people.example.com/team/%3CEMAIL_ADDRESS%3E"
                           "?phone=%3CPHONE_NUMBER%3E&tel=%3CPHONE_NUMBER%3E")
    assert "<EMAIL_ADDRESS>" in page["text"] and page["text"].count("<PHONE_NUMBER>") == 2
    assert any(r["url"] == OTHER_URL for r in curated)
    removed = {r["reason"]: r for r in pq.read_table(clean / "removed").to_pylist()}
    assert set(removed) == {"bad_http", "hard_blacklisted"}, removed  # the record quoting the e-mail, the blocked URL
    assert removed["bad_http"]["id"].endswith("@2475 (https://people.example.com/broken?email=%3CEMAIL_ADDRESS%3E)")
    assert removed["hard_blacklisted"]["url"] == "https://free-xxx-casino.example.net/win?email=%3CEMAIL_ADDRESS%3E"
    pairs = [r for r in pq.read_table(clean / "pairs" / "00000.parquet").to_pylist() if r["status"] == "success"]
    mine = next(r for r in pairs if r["page_url"].startswith("https://people.example.com/team/"))
    assert "<EMAIL_ADDRESS>" in mine["caption"] and "<PHONE_NUMBER>" in mine["alt"] + mine["figcaption"]
    with tarfile.open(clean / "pairs" / "00000.tar") as tar:
        assert tar.extractfile(f"{mine['key']}.txt").read().decode() == mine["caption"]
    assert stats["pii"]["replacements"]["EMAIL_ADDRESS"] >= 4 and stats["images"]["pii"]["replacements_total"] >= 4
    r = mix(clean, tmp_path, pairs=True)  # a finished run: the mixer reads it
    assert r.returncode == 0, r.stderr[-2000:]


def test_leak_scan_finds_every_form(tmp_path):
    """The scan the tests rely on finds a planted value in compressed Parquet cells, tar members and JSON."""
    import pyarrow as pa

    pq.write_table(pa.table({"url": ["https://x.org/?e=jane.roe%40example.org"]}), tmp_path / "a.parquet",
                   compression="zstd")
    with tarfile.open(tmp_path / "b.tar", "w") as tar:
        data = "call 4155550147".encode()
        ti = tarfile.TarInfo("k.txt")
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))
    (tmp_path / "c.json").write_text(json.dumps({"m": PHONE2}))
    (tmp_path / "d.json").write_text(json.dumps({"m": "nothing here"}))
    assert [x.split(":")[0] for x in leaks(tmp_path)] == ["a.parquet", "b.tar", "c.json"]


def _readers_refuse(out: Path, tmp: Path, why: str, status: str) -> None:
    from crawlmix.dashboard.common import Forbidden
    from crawlmix.dashboard.runs import Dashboard

    r = mix(out, tmp)
    assert r.returncode != 0 and why in r.stderr, r.stderr[-2000:]
    assert not (tmp / f"mixed-{out.name}" / "s").exists() or not list((tmp / f"mixed-{out.name}" / "s").glob("*.tar"))
    r = subprocess.run([sys.executable, str(ROOT / "pipelines" / "dedup.py"), "--input", str(out), "--output",
                        str(tmp / "dd"), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and why in r.stderr, r.stderr[-2000:]
    dash = Dashboard(out.parent)
    entry = next(e for e in dash.runs() if e["path"] == out.name)
    assert entry["status"] == status
    refused = [lambda: dash.docs(f"{out.name}/_prededup", "curated", None, 0)]  # a run's staging: never
    if status == "running":  # half written: nothing served
        refused += [lambda: dash.docs(out.name, "curated", None, 0), lambda: dash.run(out.name)]
    else:  # incomplete: what it wrote is final and scrubbed, shown with its failures
        assert dash.run(out.name)["stats"]["failed_tasks"] and dash.docs(out.name, "curated", None, 0)["total"]
    for call in refused:
        with pytest.raises(Forbidden):
            call()
    from crawlmix.dashboard.server import serve  # and over HTTP, as the browser asks

    server = serve(out.parent, port=0)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for path, code in ((f"/api/docs?path={out.name}&kind=curated", 403 if status == "running" else 200),
                           (f"/api/docs?path={out.name}/_prededup&kind=curated", 403)):
            try:
                got = urllib.request.urlopen(base + path, timeout=30).status
            except urllib.error.HTTPError as e:
                got = e.code
            assert got == code, path
    finally:
        server.shutdown()
        server.server_close()


def test_driver_killed_after_dedup_then_rerun(clean, inputs, tmp_path):
    """The driver is killed once dedup has written curated/ (final names) and before the run ends: nothing
    raw is on disk, the mixer, dedup and the dashboard refuse the folder, and the rerun ends identical to
    a clean run."""
    out = tmp_path / "crawl"
    rc, _, stderr = crawl(out, inputs, failpoint="driver:dedup")
    assert rc == -signal.SIGKILL, stderr[-3000:]
    assert list((out / "curated").glob("*.parquet"))  # files under final names a naive reader would take
    assert json.loads((out / "stats.json").read_text())["status"] == "running"
    assert leaks(out) == []
    _readers_refuse(out, tmp_path, "has not finished", "running")
    rc, _, stderr = crawl(out, inputs)
    assert rc == 0, stderr[-3000:]
    assert json.loads((out / "stats.json").read_text())["status"] == "finished"
    assert outputs(out) == outputs(clean) and leaks(out) == []


def test_task_killed_in_pii_past_its_retries(clean, inputs, tmp_path):
    """A worker killed while scrubbing the planted file, on every attempt (Ray's retry used up): the crawl
    exits non-zero naming the file, counts its records as not processed, leaves no raw row and no trace of
    the file in the outputs; readers refuse the folder; the rerun redoes it (pairs too) and ends identical
    to a clean run."""
    from crawlmix.io.paths import task_name

    out = tmp_path / "crawl"
    name = task_name(inputs[0])
    rc, stdout, stderr = crawl(out, inputs, failpoint=f"pii:{name}.parquet")
    assert rc == 1, stderr[-3000:]
    assert inputs[0] in stderr and "rerun" in stderr and "FAILED" in stdout
    stats = json.loads((out / "stats.json").read_text())
    assert stats["status"] == "incomplete" and stats["failed_tasks"] == [inputs[0]]
    assert stats["not_processed"]["per_file"] == [{"task": name, "input": inputs[0], "records": 4}]
    assert not [p for p in out.rglob(f"{name}*.parquet") if "_dedup" not in p.parts and "_staging" not in p.parts]
    assert leaks(out) == []
    _readers_refuse(out, tmp_path, "incomplete", "incomplete")
    rc, _, stderr = crawl(out, inputs)
    assert rc == 0, stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["status"] == "finished" and stats["failed_tasks"] == []
    assert outputs(out) == outputs(clean) and leaks(out) == []
    assert stats["pii"]["replacements"] == json.loads((clean / "stats.json").read_text())["pii"]["replacements"]
