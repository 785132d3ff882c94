"""The dashboard in a real headless Chromium (Debian chromium + chromium-driver, driven by Selenium), and its
discovery of tuning runs. CRAWLMIX_DOCS_SCREENSHOTS=1 also writes the Tuning view to docs/dashboard-tuning.png."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from pathlib import Path

import pytest

from tests.conftest import ROOT

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SOURCES, TARGETS = ["web-en", "code", "captions"], ["val-web", "val-code"]


def fake_sweep(out: Path, created: str, n_candidates: int = 24) -> dict:
    """A tuning run as tune_mix.py writes it, from a small fake sweep: losses follow a power law of the weights (plus
    seed noise), predictions are those plus fit error, one candidate failed; report.json, tuned.yaml, candidates.csv."""
    rng = random.Random(7)
    scale = {"val-web": (1.9, {"web-en": 0.30, "code": 0.05, "captions": 0.08}),
             "val-code": (1.5, {"web-en": 0.06, "code": 0.35, "captions": 0.02})}

    def loss(w, t):
        c, k = scale[t]
        return round(c + sum(a * (w[s] + 0.02) ** -0.5 for s, a in k.items()) / 4 + rng.gauss(0, 0.004), 4)

    def norm(x):
        return {s: round(v / sum(x.values()), 4) for s, v in x.items()}

    runs = []

    def add(kind, w, seed=17):
        losses = {t: loss(w, t) for t in TARGETS}
        runs.append({"id": f"r{len(runs):03d}", "kind": kind, "seed": seed, "weights": w, "losses": losses,
                     "predicted": {t: round(v + rng.gauss(0, 0.02), 4) for t, v in losses.items()}, "status": "ok",
                     "error": ""})

    base, uniform = {"web-en": 0.6, "code": 0.2, "captions": 0.2}, {s: round(1 / 3, 4) for s in SOURCES}
    tuned = {"web-en": 0.45, "code": 0.4, "captions": 0.15}
    add("base", base)
    add("uniform", uniform)
    for _ in range(n_candidates):
        add("candidate", norm({s: rng.gammavariate(1.0, 1.0) for s in SOURCES}))
    runs.append({"id": f"r{len(runs):03d}", "kind": "candidate", "seed": 17, "weights": norm({"web-en": 1, "code": 3, "captions": 1}),
                 "losses": {}, "predicted": None, "status": "failed", "error": "proxy trainer exited 1: tokenizer missing"})
    for kind, w in (("confirm-tuned", tuned), ("confirm-base", base), ("confirm-uniform", uniform)):
        for seed in (1, 2):
            add(kind, w, seed)

    def confirmed(kind):
        out = {}
        for t in TARGETS:
            v = [r["losses"][t] for r in runs if r["kind"] == kind]
            m = sum(v) / len(v)
            out[t] = {"mean": round(m, 4), "std": round(math.sqrt(sum((x - m) ** 2 for x in v) / len(v)), 4)}
        return out

    report = {"kind": "crawlmix-tuning", "name": "smol-text-tune", "sweep_hash": "5f1c0e9a2b7d",
              "base": "mixtures/smol-text.yaml", "stage": "pretrain", "sources": SOURCES, "targets": TARGETS,
              "proxy": {"trainer": "builtin:ngram", "text_only": True, "budget_tokens": 200000}, "runs": runs,
              "regression": {"model": "powerlaw", "heldout": {"val-web": {"spearman": 0.91, "r2": 0.83},
                                                               "val-code": {"spearman": 0.87, "r2": 0.78}}},
              "tuned": {"weights": tuned, "confirmed": confirmed("confirm-tuned"),
                        "predicted": {t: round(confirmed("confirm-tuned")[t]["mean"] - 0.01, 4) for t in TARGETS}},
              "baselines": {"base": {"weights": base, "confirmed": confirmed("confirm-base")},
                            "uniform": {"weights": uniform, "confirmed": confirmed("confirm-uniform")}},
              "created": created}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "tuned.yaml").write_text("name: smol-text-tuned\nbase: mixtures/smol-text.yaml\nsources:\n"
                                    + "".join(f"  {s}: {{weight: {w}}}\n" for s, w in tuned.items()))
    with open(out / "candidates.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["id", "kind", "seed", "status"] + [f"w_{s}" for s in SOURCES] + [f"loss_{t}" for t in TARGETS])
        for r in runs:
            wr.writerow([r["id"], r["kind"], r["seed"], r["status"]] + [r["weights"][s] for s in SOURCES]
                        + [r["losses"].get(t, "") for t in TARGETS])
    return report


def proxy_mix(tune: Path, run_id: str) -> None:
    """Where tune_mix.py keeps a run's proxy mix: <tuning>/runs/<id>/mix/<stage>/mix.lock.json."""
    d = tune / "runs" / run_id / "mix" / "pretrain"
    d.mkdir(parents=True)
    (d / "mix.lock.json").write_text(json.dumps({"mixture": f"proxy-{run_id}", "sources": [], "seed": 17}))


BROKEN = ('{"kind": "crawlmix-tuning", "name": "half-written", "sources": ["web-en", "code"], "targets": ["val-web"],'
          ' "runs": [{"id": "r000", "kind": "candidate", "weights": {"web-en": 0.5, "code": 0.5}, "losses": {"val-web": NaN},'
          ' "status": "ok"}, {"id": "r001", "kind": "candidate", "weights": {"web-en": 0.2, "code": 0.8},'
          ' "losses": {"val-web": 2.4}, "predicted": {"val-web": 2.41}, "status": "ok"},'
          ' {"id": "r002", "kind": "candidate", "status": "failed", "error": "killed"}, 7],'
          ' "tuned": {"weights": {"web-en": 0.3, "code": 0.7}, "predicted": {"val-web": Infinity}}}')


def broken_tunings(root: Path) -> None:
    """A partial report (NaN, Infinity, a non-object run, no regression / baselines / proxy / created), an unreadable
    one beside a candidates.csv, and two folders that are not tuning runs."""
    (root / "tune-broken").mkdir(parents=True)
    (root / "tune-broken" / "report.json").write_text(BROKEN)
    (root / "tune-garbage").mkdir()
    (root / "tune-garbage" / "report.json").write_text('{"kind": "crawlmix-tun')
    (root / "tune-garbage" / "candidates.csv").write_text("id,kind,loss_val-web\nr000,candidate,2.3456789\n")
    (root / "eval").mkdir()
    (root / "eval" / "report.json").write_text('{"kind": "something-else"}')
    fake_sweep(root / "_scratch" / "tune", "2030-01-01T00:00:00+00:00")


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory, sample_dir):
    root = tmp_path_factory.mktemp("dashroot")
    r = subprocess.run([sys.executable, str(ROOT / "pipelines" / "crawl.py"), "--input", str(sample_dir / "*.warc.gz"),
                        "--input", str(sample_dir / "*.arc.gz"), "--output", str(root / "crawl"), "--no-progress"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    media = tmp_path_factory.mktemp("media")  # the mix's bundled sources are generated under --root
    r = subprocess.run([sys.executable, str(ROOT / "pipelines" / "mix.py"), "--mixture",
                        str(ROOT / "mixtures" / "smolvlm-video.yaml"), "--root", str(media), "--output",
                        str(root / "mix-video"), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    fake_sweep(root / "tune", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    proxy_mix(root / "tune", "r002")
    broken_tunings(root)
    port = _port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "pipelines" / "dashboard.py"), "--root", str(root),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/api/runs", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield url, root
    proc.terminate()
    proc.wait(timeout=10)


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_no_path_outside_root(site):
    url, root = site
    for bad in ("../", "../../etc", "/etc", "crawl/../../"):
        code, body = _get(f"{url}/api/run?path={bad}")
        assert code in (403, 404), (bad, code)
    code, _ = _get(f"{url}/../../etc/passwd")
    assert code == 404
    code, _ = _get(f"{url}/api/sample?path=.&shard=../../etc/passwd&index=0")
    assert code in (403, 404)
    for api in ("tuning", "candidates"):
        for bad in ("../", "/etc", "tune/../../", "crawl"):
            code, body = _get(f"{url}/api/{api}?path={bad}")
            assert code in (403, 404), (api, bad, code)


def test_tuning_discovery(tmp_path):
    from crawlmix.dashboard.runs import Dashboard

    fake_sweep(tmp_path / "sweeps" / "older", "2026-11-01T10:00:00+00:00")
    fake_sweep(tmp_path / "sweeps" / "newer", "2026-12-01T10:00:00+00:00")
    proxy_mix(tmp_path / "sweeps" / "newer", "r002")
    broken_tunings(tmp_path)
    dash = Dashboard(tmp_path)
    runs = dash.runs()
    assert [r["path"] for r in runs if r["path"].startswith("sweeps/")] == ["sweeps/newer", "sweeps/older"]
    assert all(r["kind"] == "tuning" for r in runs)
    by_path = {r["path"]: r for r in runs}
    # not eval/ (another kind of report), not _scratch/, not the proxy mix inside a tuning run
    assert set(by_path) == {"sweeps/newer", "sweeps/older", "tune-broken", "tune-garbage"}
    assert by_path["sweeps/newer"]["proxy_mixes"] == 1 and by_path["sweeps/older"]["proxy_mixes"] == 0
    assert dash.tuning("sweeps/newer")["run_mixes"] == {"r002": "runs/r002/mix"}
    assert dash.mix("sweeps/newer/runs/r002/mix")["stages"][0]["plan"]["mixture"] == "proxy-r002"
    assert by_path["sweeps/newer"]["name"] == "smol-text-tune" and by_path["sweeps/newer"]["config_hash"] == "5f1c0e9a2b7d"
    assert by_path["sweeps/newer"]["docs"] == 33 and not by_path["sweeps/newer"]["problem"]
    assert "not valid JSON" in by_path["tune-garbage"]["problem"]
    assert [r["created"] for r in runs] == sorted((r["created"] for r in runs), reverse=True)


def test_malformed_report(tmp_path):
    from crawlmix.dashboard.runs import Dashboard
    from crawlmix.dashboard.server import dumps

    broken_tunings(tmp_path)
    dash = Dashboard(tmp_path)
    t = dash.tuning("tune-broken")
    json.loads(dumps(t), parse_constant=lambda c: pytest.fail(f"{c} in the answer"))  # strict JSON
    for part in ("regression", "baselines", "proxy", "created", "tuned.confirmed", "tuned.yaml", "candidates.csv"):
        assert part in t["missing"], part
    assert any("runs[0].losses.val-web" in p for p in t["problems"])
    assert any("tuned.predicted.val-web" in p for p in t["problems"])
    assert any("runs[3] is not an object" in p for p in t["problems"])
    assert [r["status"] for r in t["runs"]] == ["ok", "ok", "failed"] and t["runs"][0]["losses"]["val-web"] is None
    c = dash.candidates("tune-broken", 0)  # no candidates.csv: the report's runs
    assert c["total"] == 3 and "w:web-en" in c["columns"]
    g = dash.tuning("tune-garbage")
    assert g["missing"][0] == "report.json" and "not valid JSON" in g["problems"][0]
    assert dash.candidates("tune-garbage", 0)["rows"] == [["r000", "candidate", "2.3456789"]]
    with pytest.raises(Exception, match="not a tuning run"):
        dash.tuning("eval")


def test_malformed_report_over_http(site):
    url, _ = site
    for path in ("tune-broken", "tune-garbage"):
        code, body = _get(f"{url}/api/tuning?path={path}")
        assert code == 200, body
        data = json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} in the answer"))
        assert data["missing"]
        code, body = _get(f"{url}/api/candidates?path={path}&page=0")
        assert code == 200, body


def _chrome(tmp_path):
    if not (CHROMIUM and DRIVER):
        pytest.fail("Debian chromium and chromium-driver are required (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--window-size=1300,2400",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)


def test_dashboard_in_chromium(site, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def count(d):  # the preview re-renders: read it in one script call (no stale element handles)
        return d.execute_script("const e = document.getElementById('preview-count'); return e ? +e.textContent : null;")

    url, root = site
    stats = json.loads((root / "crawl" / "stats.json").read_text())
    driver = _chrome(tmp_path)
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(url + "/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#runs a[href^='#/crawl/']"))
        link = driver.find_element(By.CSS_SELECTOR, "#runs a[href^='#/crawl/']")
        assert "default" in link.text
        link.click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#funnel tr[data-stage]"))
        # funnel numbers equal stats.json
        for row in driver.find_elements(By.CSS_SELECTOR, "#funnel tr[data-stage]"):
            st = stats["stages"][row.get_attribute("data-stage")]
            assert int(row.find_element(By.CSS_SELECTOR, ".in").text) == st["in"]
            assert int(row.find_element(By.CSS_SELECTOR, ".out").text) == st["out"]
        assert int(driver.find_element(By.ID, "docs-out").text) == stats["docs_out"]
        # charts rendered: non-empty SVGs
        for cid in ("funnel-chart", "drops-chart", "lang-chart", "length-chart", "dedup-chart"):
            bars = driver.find_elements(By.CSS_SELECTOR, f"#{cid} rect")
            assert bars and any(float(b.get_attribute("width")) > 1 for b in bars), cid
        # threshold preview changes the count
        wait.until(lambda d: count(d) is not None)
        before = count(driver)
        assert before == stats["docs_out"] - 1  # the Chinese page has < 50 words; rules were not applied to it
        driver.execute_script("const t = document.getElementById('thr'); t.value = 400; t.dispatchEvent(new Event('input'));")
        wait.until(lambda d: count(d) not in (None, before))
        assert count(driver) < before
        # dropped-docs browser by reason
        driver.find_element(By.CSS_SELECTOR, "a[data-reason='exact']").click()
        wait.until(lambda d: "reason exact" in d.find_element(By.ID, "filter").text)
        assert "mirror.example.net" in driver.find_element(By.ID, "doc-table").text
        # provenance on the page
        assert stats["config_hash"] in driver.find_element(By.ID, "prov").text
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        # the mix: target vs realised shares, the shard table, a sample
        driver.get(url + "/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#runs a[href^='#/mix/']"))
        driver.find_element(By.CSS_SELECTOR, "#runs a[href^='#/mix/']").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.shards tr"))
        lock = json.loads(next((root / "mix-video").rglob("mix.lock.json")).read_text())
        bars = driver.find_elements(By.CSS_SELECTOR, "svg[id^='mix-chart'] rect")
        assert len(bars) == 2 * len(lock["sources"]) and all(float(b.get_attribute("width")) >= 1 for b in bars)
        rows = driver.find_elements(By.CSS_SELECTOR, "table.shards tr")[1:]
        assert len(rows) == lock["shards"]
        assert sum(int(r.find_elements(By.TAG_NAME, "td")[1].text.replace(",", "")) for r in rows) == lock["samples"]
        driver.find_element(By.CSS_SELECTOR, "a[data-shard]").click()
        wait.until(lambda d: "Sample" in d.find_element(By.CSS_SELECTOR, "[id^=viewer]").text)
        driver.save_screenshot(str(tmp_path / "dashboard-mix.png"))
    finally:
        driver.quit()


def test_tuning_view_in_chromium(site, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, root = site
    report = json.loads((root / "tune" / "report.json").read_text())
    ok = [r for r in report["runs"] if r["status"] == "ok"]
    failed = [r for r in report["runs"] if r["status"] != "ok"]
    driver = _chrome(tmp_path)
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(url + "/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#runs a[href='#/tuning/tune']"))
        kinds = [r.get_attribute("data-kind") for r in driver.find_elements(By.CSS_SELECTOR, "#runs tr[data-kind]")]
        assert kinds.count("tuning") == 3 and kinds.count("mix") == 1 and "crawl" in kinds  # proxy mixes not listed
        driver.find_element(By.CSS_SELECTOR, "#runs a[href='#/tuning/tune']").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cand-table tr"))
        assert not driver.find_elements(By.ID, "missing")  # a complete report names nothing missing
        # predicted vs measured: one chart per target, one point per ok run, the y = x line
        for i, t in enumerate(report["targets"]):
            svg = driver.find_element(By.ID, f"scatter-{i}")
            assert svg.get_attribute("data-target") == t
            pts = svg.find_elements(By.CSS_SELECTOR, "circle.pt")
            assert sorted(p.get_attribute("data-run") for p in pts) == sorted(r["id"] for r in ok)
            assert svg.find_elements(By.CSS_SELECTOR, "line.diag")
        assert len(driver.find_elements(By.CSS_SELECTOR, "svg.scatter circle.pt")) == len(ok) * len(report["targets"])
        # weights: a base and a tuned bar for every source, labelled with both shares
        chart = driver.find_element(By.ID, "weights-chart")
        for cls in ("bar", "bar2"):
            assert [b.get_attribute("data-label") for b in chart.find_elements(By.CSS_SELECTOR, f"rect.{cls}")] == SOURCES
        for s in SOURCES:
            b, t = report["baselines"]["base"]["weights"][s], report["tuned"]["weights"][s]
            assert f"{100 * b:.1f}% / {100 * t:.1f}%" in chart.text
        # baselines table: the report's numbers
        for name, part in (("base", report["baselines"]["base"]), ("uniform", report["baselines"]["uniform"]),
                           ("tuned", report["tuned"])):
            for t in report["targets"]:
                cell = driver.find_element(By.CSS_SELECTOR, f"#baselines tr[data-row='{name}'] td[data-target='{t}']")
                assert float(cell.find_element(By.CLASS_NAME, "mean").text) == pytest.approx(part["confirmed"][t]["mean"], abs=5e-5)
                assert float(cell.find_element(By.CLASS_NAME, "std").text) == pytest.approx(part["confirmed"][t]["std"], abs=5e-5)
        for t in report["targets"]:
            pred = driver.find_element(By.CSS_SELECTOR, f"#baselines tr[data-row='tuned'] td.pred[data-target='{t}']")
            assert float(pred.text) == pytest.approx(report["tuned"]["predicted"][t], abs=5e-5)
            row = driver.find_element(By.CSS_SELECTOR, f"#heldout tr[data-target='{t}']").text
            assert f"{report['regression']['heldout'][t]['spearman']:.3f}" in row
        # failed runs listed apart, with their error
        for r in failed:
            assert r["error"] in driver.find_element(By.CSS_SELECTOR, f"#failed tr[data-run='{r['id']}']").text
        # proxy line, provenance
        assert "builtin:ngram" in driver.find_element(By.ID, "proxy").text
        assert driver.find_elements(By.ID, "proxy-text-only")
        assert report["sweep_hash"] in driver.find_element(By.ID, "prov").text
        assert driver.find_element(By.ID, "created").text == report["created"]
        # candidate table, paged
        assert len(driver.find_elements(By.CSS_SELECTOR, "#cand-table tr")) == 1 + 25
        assert driver.find_elements(By.CSS_SELECTOR, "#cand-table a[href='#/mix/tune%2Fruns%2Fr002%2Fmix']")
        page_h = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1300, page_h + 20)
        shot = tmp_path / "dashboard-tuning.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("CRAWLMIX_DOCS_SCREENSHOTS"):
            shutil.copyfile(shot, ROOT / "docs" / "dashboard-tuning.png")
        driver.set_window_size(1300, 2400)
        driver.find_element(By.ID, "cand-next").click()
        wait.until(lambda d: "page 2" in d.execute_script(  # re-rendered: read it in one call (no stale handles)
            "const e = document.getElementById('cand-page'); return e ? e.textContent : '';"))
        assert len(driver.find_elements(By.CSS_SELECTOR, "#cand-table tr")) == 1 + len(report["runs"]) - 25
        # a partial report: the page shows what is there and names what is missing
        driver.get(url + "/#/tuning/tune-broken")
        wait.until(lambda d: d.find_elements(By.ID, "missing"))
        missing = driver.find_element(By.ID, "missing").text
        for part in ("regression", "baselines", "proxy", "tuned.confirmed", "candidates.csv", "NaN"):
            assert part in missing, part
        assert len(driver.find_elements(By.CSS_SELECTOR, "#scatter-0 circle.pt")) == 1  # r001: the one with both
        assert driver.find_elements(By.CSS_SELECTOR, "#failed tr[data-run='r002']")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#weights-chart rect.bar2")) == 2
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cand-table tr"))
        driver.save_screenshot(str(tmp_path / "dashboard-tuning-broken.png"))
        driver.get(url + "/#/tuning/tune-garbage")
        wait.until(lambda d: "not valid JSON" in d.find_element(By.ID, "app").text)
        wait.until(lambda d: "2.3457" in d.find_element(By.ID, "app").text)  # its candidates.csv still shows
        driver.get(url + "/#/tuning/../../etc")
        wait.until(lambda d: "Error" in d.find_element(By.ID, "app").text)
    finally:
        driver.quit()
