"""The crawl view of the dashboard shows the run's interleaved documents (text and images in reading order) and their
funnels: the JSON API against the Parquet files, then the page in a real headless Chromium."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request

import pyarrow.parquet as pq
import pytest

from tests.dashboard.test_dashboard import _chrome
from tests.interleaved.pages import INLINE, article_warc, job

from crawlmix.interleaved.job import run


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from crawlmix.dashboard.server import serve
    from crawlmix.runtime.funnel import merge_stats
    from crawlmix.runtime.atomic import write_json
    from crawlmix.text.curate import curate_file, load_text_job

    root = tmp_path_factory.mktemp("dash")
    crawl = root / "crawl"
    warc = article_warc(root / "a.warc.gz")
    part = curate_file(warc, crawl, load_text_job(None))
    stats = merge_stats([part], {"status": "finished", "job": "default", "config_hash": "c0ffee", "seed": 0,
                                 "crawlmix_version": "0.1.0", "inputs": 1, "wall_s": 1.0})
    write_json(crawl / "stats.json", stats)
    il = run([warc], crawl, job(), INLINE, kept_from=str(crawl))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = serve(root, "127.0.0.1", port)
    yield f"http://127.0.0.1:{port}", crawl, il
    server.shutdown()
    server.server_close()


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_api_gives_the_documents_in_order_and_the_funnels(site):
    url, crawl, stats = site
    code, d = _get(f"{url}/api/interleaved?path=crawl&page=0")
    assert code == 200 and d["present"] and d["documents"] == stats["documents"] == d["total"] == 1
    assert d["funnel"] == stats["funnel"]
    (doc,) = d["docs"]
    (row,) = [r for f in sorted((crawl / "interleaved").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert [it["type"] for it in doc["items"]] == ["text" if t is not None else "image" for t in row["texts"]]
    for it, t, im in zip(doc["items"], row["texts"], row["images"]):
        if it["type"] == "text":
            assert it["text"] == t
        else:
            assert it["src"].startswith("data:image/jpeg;base64,") and it["url"] == im["url"]
            assert base64.b64decode(it["src"].split(",", 1)[1]) == im["bytes"]
    assert _get(f"{url}/api/interleaved?path=../")[0] == 403
    code, none = _get(f"{url}/api/interleaved?path=.")  # the root holds no interleaved output
    assert code == 200 and none == {"present": False}


def test_crawl_view_shows_the_documents_in_chromium(site, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, crawl, stats = site
    (row,) = [r for f in sorted((crawl / "interleaved").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    driver = _chrome(tmp_path)
    try:
        driver.get(url + "/#/crawl/crawl")
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#interleaved article.il-doc"))
        parts = driver.find_elements(By.CSS_SELECTOR, "#interleaved article.il-doc [data-pos]")
        assert [p.tag_name for p in parts] == ["div" if t is not None else "figure" for t in row["texts"]]
        imgs = driver.find_elements(By.CSS_SELECTOR, "#interleaved figure.il-image img")
        assert len(imgs) == 2 and all(driver.execute_script("return arguments[0].naturalWidth", i) > 0 for i in imgs)
        for tr in driver.find_elements(By.CSS_SELECTOR, "#il-image-funnel tr[data-stage]"):
            want = next(f for f in stats["funnel"]["images"] if f["stage"] == tr.get_attribute("data-stage"))
            assert int(tr.find_element(By.CSS_SELECTOR, ".in").text) == want["in"]
            assert int(tr.find_element(By.CSS_SELECTOR, ".out").text) == want["out"]
        assert driver.find_element(By.ID, "il-images").text == "2"
        assert driver.find_element(By.ID, "funnel")  # the crawl page itself still renders
        driver.save_screenshot(str(tmp_path / "interleaved.png"))
        assert (tmp_path / "interleaved.png").stat().st_size > 10_000
    finally:
        driver.quit()
