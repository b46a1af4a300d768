"""Issue #29: the console `tessera serve` serves at /console, driven in a real
browser (Debian's chromium and chromium-driver, through selenium) against a
real server: what it shows is checked against the API (tessera.Client), the
code it offers is run, a read key sees no write control, a wrong key is
refused, no request leaves for another origin (the browser's own network
log), no console errors, and a screenshot of each page is kept under the
test's temporary folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import tessera
from conftest import corpus, load, maxsim

DIM = 8
RW, RO = "rw-console-key-0123456789", "ro-console-key-0123456789"


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the [test] extra) drives the browser")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture
def browser():
    b = _browser()
    b.implicitly_wait(0)
    yield b
    b.quit()


def wait_for(b, css, timeout=15, all_=False):
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = b.find_elements(By.CSS_SELECTOR, css)
        if found:
            return found if all_ else found[0]
        time.sleep(0.05)
    raise AssertionError(f"{css} did not appear; page: {b.find_element(By.TAG_NAME, 'main').text[:500]}")


def texts(b, css):
    from selenium.webdriver.common.by import By

    return [e.text for e in b.find_elements(By.CSS_SELECTOR, css)]


def origins_requested(b):
    """Every URL the page asked for (the DevTools network log)."""
    urls = []
    for entry in b.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def test_the_console_shows_what_the_api_answers(make_server, tmp_path, rng, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    s = make_server(api_keys=f"rw:{RW}\nro:{RO}", args=("--live-recall-rate", "1", "--live-recall-cpu", "1"))
    docs = corpus(rng, 120, DIM, 3, 12)
    with tessera.Client(s.url, api_key=RW) as client:
        col = client.create_collection("docs", DIM)
        load(col, docs)
        col.flush()
        client.create_collection("empty", DIM, index="none")
        shots = tmp_path / "screenshots"
        shots.mkdir()
        b = browser

        # A wrong key is refused; the right one is kept for the tab.
        b.get(s.url + "/console")
        key = wait_for(b, "#api-key")
        key.send_keys("wrong-key-0123456789abcdef", Keys.ENTER)
        wait_for(b, "#key-form")
        assert "refused" in b.find_element(By.TAG_NAME, "main").text
        wait_for(b, "#api-key").send_keys(RW, Keys.ENTER)

        # Collections: what the API lists, with its counts.
        wait_for(b, "#collections tbody tr")
        names = texts(b, "#collections a.collection")
        assert names == client.list_collections() == ["docs", "empty"]
        row = b.find_elements(By.CSS_SELECTOR, "#collections tbody tr")[0].text
        assert f"{len(docs):,}" in row and str(col.stats()["tokens"]) in row.replace(",", "")
        assert b.find_elements(By.CSS_SELECTOR, "#create"), "a write key sees the create form"
        b.save_screenshot(str(shots / "collections.png"))

        # A collection: its stats and its documents, page by page, and one by id.
        b.get(s.url + "/console#/c/docs")
        wait_for(b, "#document-list tbody tr")
        listed = texts(b, "#document-list tbody tr td:first-child")
        assert listed == sorted(docs)[:20]
        stat = b.find_element(By.CSS_SELECTOR, '[data-stat="documents"] dd').text
        assert stat == f"{len(docs):,}"
        b.find_element(By.ID, "next-page").click()
        wait_for(b, "#document-list tbody tr")
        time.sleep(0.2)
        assert texts(b, "#document-list tbody tr td:first-child") == sorted(docs)[20:40]
        bars = b.find_elements(By.CSS_SELECTOR, "#segments rect.bar")
        sizes = col.stats()["segment_sizes"]
        assert [int(r.get_attribute("data-bytes")) for r in bars] == [x["bytes"] for x in sizes] and sizes
        b.find_element(By.CSS_SELECTOR, "#get input").send_keys("doc-0007", Keys.ENTER)
        doc = wait_for(b, "#document").text
        assert "doc-0007" in doc and f"{docs['doc-0007'].shape[0]} tokens" in doc
        b.save_screenshot(str(shots / "collection.png"))

        # A pooled collection says how many tokens it was given and kept.
        pooled = client.create_collection("pooled", DIM, index="none", settings={"pool_factor": 2})
        load(pooled, docs)
        st = pooled.stats()
        assert st["tokens"] < st["given_tokens"]
        b.get(s.url + "/console#/c/pooled")
        pooling = wait_for(b, '[data-stat="pooling"] dd').text
        assert "factor 2" in pooling and f"{st['given_tokens']:,} tokens given" in pooling, pooling

        # The playground: the same hits as the client, and code that gives them too.
        q = rng.standard_normal((3, DIM)).astype(np.float32)
        b.get(s.url + "/console#/c/docs/search")
        form = wait_for(b, "#search")
        Select(form.find_element(By.NAME, "kind")).select_by_value("tokens")
        form.find_element(By.NAME, "query").send_keys(json.dumps(q.tolist()))
        k = form.find_element(By.NAME, "k")
        k.clear()
        k.send_keys("5")
        form.find_element(By.NAME, "exact").click()
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for(b, "#hits tbody tr")
        shown = list(zip(texts(b, "#hits .hit-id"), map(float, texts(b, "#hits .hit-score"))))
        want = col.search(q, k=5, exact=True)
        assert [i for i, _ in shown] == [h.id for h in want]
        assert [sc for _, sc in shown] == pytest.approx([h.score for h in want], abs=1e-6)
        assert [h.id for h in want] == sorted(docs, key=lambda i: -maxsim(q, docs[i]))[:5]
        b.save_screenshot(str(shots / "search.png"))
        b.find_element(By.ID, "copy-python").click()
        code = wait_for(b, "#code").text
        env = dict(os.environ, TESSERA_API_KEY=RW)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        ran = [(line.split()[0], float(line.split()[1])) for line in out.stdout.strip().splitlines()]
        assert [i for i, _ in ran] == [i for i, _ in shown]
        if shutil.which("curl"):
            b.find_element(By.ID, "copy-curl").click()
            time.sleep(0.2)
            curl = b.find_element(By.ID, "code").text
            assert curl.startswith("curl ")
            out = subprocess.run(["sh", "-c", curl], capture_output=True, text=True, env=env, timeout=60)
            assert [h["id"] for h in json.loads(out.stdout)["hits"]] == [i for i, _ in shown], out.stderr

        # The recall curve: one dot per candidate count, with the API's values.
        b.get(s.url + "/console#/c/docs/recall")
        form = wait_for(b, "#recall")
        for name, value in (("sample", "30"), ("k", "5"), ("candidates", "5,10,20,60")):
            box = form.find_element(By.NAME, name)
            box.clear()
            box.send_keys(value)
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        dots = wait_for(b, "#recall-plot circle.dot", all_=True)
        plotted = [(int(d.get_attribute("data-candidates")), float(d.get_attribute("data-recall"))) for d in dots]
        api = client._call("POST", "/v1/collections/docs/recall", {"sample": 30, "k": 5, "candidates": [5, 10, 20, 60], "query_tokens": 32, "seed": 0})
        assert plotted == [(p["candidates"], pytest.approx(p["recall"], abs=1e-12)) for p in api["points"]]
        b.save_screenshot(str(shots / "recall.png"))

        # The server's own metrics: the latency histogram of the searches above,
        # and live recall — two-stage answers checked against exact search.
        for _ in range(6):
            col.search(rng.standard_normal((3, DIM)).astype(np.float32), k=5, candidates=5)
        import urllib.request

        def live():
            req = urllib.request.Request(s.url + "/metrics", headers={"Authorization": f"Bearer {RW}"})
            text = urllib.request.urlopen(req, timeout=10).read().decode()
            value = lambda n: next((float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(n + '{collection="docs"}')), 0.0)
            return value("tessera_live_recall_queries_total"), value("tessera_live_recall_sum_total")

        deadline = time.monotonic() + 30
        while live()[0] < 6:
            assert time.monotonic() < deadline, live()
            time.sleep(0.05)
        checked, total = live()
        b.get(s.url + "/console#/server")
        bars = wait_for(b, "#latency-plot rect.bar", all_=True)
        assert sum(int(r.get_attribute("data-count")) for r in bars) >= 1
        mean = wait_for(b, '#live-recall .live-mean[data-collection="docs"]').text
        assert float(mean) == pytest.approx(total / checked, abs=5e-5)
        b.save_screenshot(str(shots / "server.png"))

        # Backups: take one from the page; the list is the API's.
        b.get(s.url + "/console#/backups")
        form = wait_for(b, "#take-backup")
        form.find_element(By.NAME, "name").send_keys("from-console")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for(b, "#backups .backup-name")
        listed = texts(b, "#backups .backup-name")
        assert listed == [x["name"] for x in client._call("GET", "/v1/backups")["backups"]] == ["from-console"]
        assert (s.backups / "from-console" / "collections" / "docs").is_dir()
        b.save_screenshot(str(shots / "backups.png"))

        # Readable on a phone: nothing wider than the screen.
        b.set_window_size(390, 844)
        b.get(s.url + "/console#/")
        wait_for(b, "#collections tbody tr")
        assert b.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        b.save_screenshot(str(shots / "collections-phone.png"))
        b.set_window_size(1280, 900)

        # Nothing from another origin, and no console errors.
        requested = origins_requested(b)
        assert requested and all(u.startswith(s.url) or u.startswith("data:") for u in requested), requested
        errors = [e for e in b.get_log("browser") if e["level"] == "SEVERE" and "401" not in e["message"]]
        assert not errors, errors

        # A read key sees no write control.
        b.find_element(By.ID, "forget-key").click()
        wait_for(b, "#api-key").send_keys(RO, Keys.ENTER)
        wait_for(b, "#collections tbody tr")
        assert "read-only" in b.find_element(By.ID, "who").text
        assert not b.find_elements(By.CSS_SELECTOR, "#create, .write, button.danger")
        b.get(s.url + "/console#/c/docs")
        wait_for(b, "#get input").send_keys("doc-0007", Keys.ENTER)
        wait_for(b, "#document")
        assert not b.find_elements(By.CSS_SELECTOR, "button.danger")
        b.save_screenshot(str(shots / "read-only.png"))
        b.get(s.url + "/console#/backups")
        wait_for(b, "#backups .backup-name")
        assert not b.find_elements(By.CSS_SELECTOR, "#take-backup")
    assert sorted(p.name for p in shots.iterdir()) == sorted(
        ["collections.png", "collection.png", "search.png", "recall.png", "server.png", "backups.png", "collections-phone.png", "read-only.png"]
    )


def test_the_console_is_served_with_a_policy_that_keeps_it_on_this_server(make_server):
    """No browser needed: the page and its assets come from the binary, with a
    Content-Security-Policy that allows this origin only; / leads to it."""
    import urllib.request

    s = make_server()
    for path, kind in (("/console", "text/html"), ("/console/console.js", "text/javascript"), ("/console/console.css", "text/css")):
        r = urllib.request.urlopen(s.url + path, timeout=10)
        assert r.headers["Content-Type"].startswith(kind)
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
        body = r.read().decode()
        assert "http://" not in body.replace("http://www.w3.org/2000/svg", "") and "https://" not in body, path
    assert urllib.request.urlopen(s.url + "/", timeout=10).geturl().endswith("/console")


def test_the_console_is_usable_by_keyboard(make_server, rng, browser):
    """Every control of the search page is reached with Tab (in page order,
    none skipped), and a search is typed and sent without a mouse."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    s = make_server()
    docs = corpus(rng, 40, DIM, 3, 8)
    with tessera.Client(s.url) as client:
        col = client.create_collection("docs", DIM)
        load(col, docs)
        b = browser
        b.get(s.url + "/console#/c/docs/search")
        wait_for(b, "#search")
        focusable = b.execute_script(
            "return [...document.querySelectorAll('a[href], button, input, select, textarea')]"
            ".filter(e => !e.disabled && e.offsetParent !== null).length"
        )
        b.find_element(By.TAG_NAME, "body").click()
        b.execute_script("document.activeElement.blur()")
        seen = []
        for _ in range(focusable + 2):
            ActionChains(b).send_keys(Keys.TAB).perform()
            el = b.switch_to.active_element
            seen.append(el.get_attribute("name") or el.get_attribute("id") or el.text)
            if el.get_attribute("name") == "query":
                # The query: a token matrix typed as JSON (the select before it was left on its first choice).
                break
        assert "kind" in seen and "k" in seen and "candidates" in seen, seen
        kind = b.find_element(By.NAME, "kind")
        assert kind.get_attribute("value") == "tokens"  # no model, no text: tokens is the first choice
        q = rng.standard_normal((2, DIM)).astype(np.float32)
        ActionChains(b).send_keys(json.dumps(q.tolist())).perform()
        # Back to k (Shift+Tab through the checkbox and candidates) and Enter submits the form.
        for _ in range(3):
            ActionChains(b).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
        assert b.switch_to.active_element.get_attribute("name") == "k"
        ActionChains(b).send_keys(Keys.ENTER).perform()
        wait_for(b, "#hits tbody tr")
        shown = texts(b, "#hits .hit-id")
        assert shown == [h.id for h in col.search(q, k=10)]
        # Every control is reachable: Tab visits as many as the page has.
        b.execute_script("document.activeElement.blur()")
        reached = set()
        for _ in range(focusable + 5):
            ActionChains(b).send_keys(Keys.TAB).perform()
            reached.add(b.execute_script("return document.activeElement.outerHTML.slice(0, 120)"))
        assert len(reached) >= focusable, (len(reached), focusable)
