"""The dashboard in a real headless Chromium (Debian chromium + chromium-driver, driven by Selenium)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import ROOT

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


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


def test_dashboard_in_chromium(site, tmp_path):
    if not (CHROMIUM and DRIVER):
        pytest.fail("Debian chromium and chromium-driver are required (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def count(d):  # the preview re-renders: read it in one script call (no stale element handles)
        return d.execute_script("const e = document.getElementById('preview-count'); return e ? +e.textContent : null;")

    url, root = site
    stats = json.loads((root / "crawl" / "stats.json").read_text())
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--window-size=1300,2400",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
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
