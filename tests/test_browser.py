"""The published site works offline: nothing broken, nothing from a CDN, math typeset.

Two layers:

* a static crawl of ``_build/html`` (``tests/site_check.py``): every local ``href``/``src``
  resolves to a file, every ``page.html#anchor`` exists, and no page (or its stylesheets)
  loads a script, stylesheet, font or image from the network;
* the real thing in headless Chromium (Debian's ``chromium`` + ``chromium-driver``): every page
  served from 127.0.0.1, no console error, every ``<img>`` decoded, MathJax typesets the math,
  every request the page makes stays on 127.0.0.1; screenshots of the index and one notebook
  page go to ``_build/screenshots/``.

The site is the one the notebook tests build (``built_book`` from ``conftest.py``);
``VQPAPER_SITE=path/to/html`` checks an already built site instead. Without a built site the
tests skip and say so.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import site_check  # noqa: E402  (tests/site_check.py)

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("VQPAPER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("VQPAPER_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # without these, Chromium keeps trying to reach Google's services (a closed network here)
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage",
    "--no-default-browser-check", "--metrics-recording-only", "--window-size=1366,1600",
]


# ---------------------------------------------------------------------------- the site

# ``site``: the built book (tests/conftest.py).


@pytest.fixture(scope="module")
def report(site):
    return site_check.check_site(site)


def _toc_files():
    import yaml

    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))
            for part in e.get("parts", []):
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return files


@pytest.mark.notebooks
def test_every_toc_entry_has_a_page(site):
    missing = [f for f in _toc_files() if not (site / f"{f}.html").is_file()]
    assert not missing, f"pages missing from {site}: {missing}"


@pytest.mark.notebooks
def test_no_broken_internal_links_or_missing_images(report):
    assert report.pages and report.images > 0, report.summary()
    assert not report.broken, report.summary()
    assert not report.bad_anchors, report.summary()


@pytest.mark.notebooks
def test_nothing_is_loaded_from_the_network(report):
    """No CDN: MathJax, the theme's fonts and scripts, the notebooks' outputs are all local."""
    assert not report.external, report.summary()


@pytest.mark.notebooks
def test_mathjax_is_served_locally(site):
    """Sphinx would load MathJax 3 from cdn.jsdelivr.net: here it comes from ``_static/mathjax``."""
    script = re.compile(r'<script[^>]*\ssrc="([^"]*mathjax[^"]*)"', re.I)
    found = {}
    for page in site.rglob("*.html"):
        for src in script.findall(page.read_text(errors="replace")):
            found[page] = src
    assert found, "no page loads MathJax: does the book have no math at all?"
    for page, src in found.items():
        assert "://" not in src and not src.startswith("//"), f"{page.relative_to(site)} loads MathJax from {src}"
        target = (page.parent / src.split("?")[0]).resolve()
        assert target.is_file(), f"{page.relative_to(site)}: {src} does not exist"
        assert target.is_relative_to(site / "_static"), target


# ------------------------------------------------------------ the checker checks things

def _fake_site(root: Path) -> Path:
    (root / "_static" / "fonts").mkdir(parents=True)
    (root / "sub").mkdir()
    (root / "_static" / "fonts" / "a.woff2").write_bytes(b"font")
    (root / "_static" / "ok.css").write_text(
        "@font-face { src: url('fonts/a.woff2') format('woff2'), url(fonts/gone.woff2); }\n"
        "/* url(https://commented.out/font.woff) */\n"
        "@import url('https://fonts.googleapis.com/css?family=Roboto');\n")
    (root / "pic.png").write_bytes(b"\x89PNG")
    (root / "index.html").write_text(
        '<html><head><link rel="stylesheet" href="_static/ok.css?v=1">'
        '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>'
        '<link rel="canonical" href="https://example.org/">'
        '</head><body id="top"><img src="pic.png"><img src="missing.png" srcset="pic.png 1x, nope.png 2x">'
        '<a href="sub/page.html#there">ok</a> <a href="sub/page.html#nowhere">bad anchor</a>'
        '<a href="#top">self</a> <a href="gone.html">broken</a> <a href="https://example.org">fine</a>'
        '<a href="mailto:a@b.c">mail</a> <div style="background: url(//cdn.example/bg.png)"></div>'
        '</body></html>')
    (root / "sub" / "page.html").write_text(
        '<html><body><h1 id="there">x</h1><a href="../index.html">up</a><a href="..">dir</a>'
        '<img src="/pic.png"></body></html>')
    return root


def test_site_check_finds_what_is_wrong(tmp_path):
    report = site_check.check_site(_fake_site(tmp_path))
    assert sorted(report.pages) == ["index.html", "sub/page.html"]
    assert report.images == 3
    assert sorted(p.url for p in report.broken) == ["fonts/gone.woff2", "gone.html", "missing.png", "nope.png"]
    assert [p.url for p in report.bad_anchors] == ["sub/page.html#nowhere"]
    assert sorted(p.url for p in report.external) == [
        "//cdn.example/bg.png", "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js",
        "https://fonts.googleapis.com/css?family=Roboto"]
    assert sorted(p.url for p in report.external_links) == ["https://example.org", "https://example.org/"]
    assert not report.ok
    assert "broken" in report.summary() and "gone.html" in report.summary()


def test_site_check_passes_a_clean_site(tmp_path):
    (tmp_path / "index.html").write_text('<html><body><a href="#">top</a><img src="a.png"></body></html>')
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    report = site_check.check_site(tmp_path)
    assert report.ok, report.summary()
    assert site_check.main([str(tmp_path)]) == 0
    assert site_check.main([str(tmp_path / "nowhere")]) == 2


# ------------------------------------------------------------------- headless Chromium

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _serve(directory: Path):
    """``directory`` over HTTP on 127.0.0.1 (a random free port); stopped on exit."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def server(site):
    """The site over HTTP, as a reader would get it."""
    with _serve(site) as url:
        yield url


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.skip(f"headless browser test needs {' and '.join(missing)}: "
                    "apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach the network
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=os.devnull)
    drv = webdriver.Chrome(service=service, options=options)
    drv.set_page_load_timeout(60)
    drv.set_script_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


# Waits (at most 20 s) for the images and MathJax, then reports what the page shows.
INSPECT_JS = r"""
const done = arguments[arguments.length - 1];
const deadline = Date.now() + 20000;
const imagesLoaded = () => Array.from(document.images).every(img => img.complete);
async function run() {
  document.querySelectorAll('img[loading="lazy"]').forEach(img => { img.loading = 'eager'; });
  while (!imagesLoaded() && Date.now() < deadline) { await new Promise(r => setTimeout(r, 50)); }
  const hasMathJaxScript = !!document.querySelector('script[src*="mathjax" i]');
  if (hasMathJaxScript) {
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise) && Date.now() < deadline) {
      await new Promise(r => setTimeout(r, 50));
    }
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      await Promise.race([MathJax.startup.promise, new Promise(r => setTimeout(r, Math.max(0, deadline - Date.now())))]);
    }
  }
  const math = document.querySelectorAll('.math, div.math, span.math').length;
  return {
    url: location.href,
    readyState: document.readyState,
    images: Array.from(document.images).map(img => ({src: img.currentSrc || img.src, complete: img.complete,
                                                    width: img.naturalWidth})),
    hasMathJaxScript: hasMathJaxScript,
    mathJaxVersion: (window.MathJax && MathJax.version) || null,
    math: math,
    mjx: document.querySelectorAll('mjx-container').length,
    mjxErrors: document.querySelectorAll('mjx-merror').length,
    resources: performance.getEntriesByType('resource').map(e => e.name),
  };
}
run().then(done, err => done({error: String(err)}));
"""


def _pages(site: Path):
    """Every page of the site (index.html, the redirect to the first chapter, included)."""
    return sorted(str(p.relative_to(site)).replace(os.sep, "/") for p in site.rglob("*.html")
                  if "_static" not in p.parts)


def _severe(logs):
    """Console errors; Chromium's own request for /favicon.ico (the book sets no favicon) is not
    the page's doing and is left out."""
    return [entry for entry in logs if entry.get("level") == "SEVERE"
            and "/favicon.ico " not in entry.get("message", "")]


def _inspect(driver, server, pages):
    """Load each page; returns (problems, number of pages with math)."""
    problems = []
    checked_math = 0
    driver.get_log("browser")  # drop anything logged before the first page
    for rel in pages:
        driver.get(f"{server}/{rel}")
        info = driver.execute_async_script(INSPECT_JS)
        logs = _severe(driver.get_log("browser"))
        if "error" in info:
            problems.append(f"{rel}: the inspection script failed: {info['error']}")
            continue
        for entry in logs:
            problems.append(f"{rel}: console error: {entry.get('message')}")
        for img in info["images"]:
            if not img["complete"] or img["width"] <= 0:
                problems.append(f"{rel}: image not shown (naturalWidth {img['width']}): {img['src']}")
        for res in info["resources"]:
            if not res.startswith(server + "/"):
                problems.append(f"{rel}: request to the network: {res}")
        if info["math"]:
            checked_math += 1
            if not info["hasMathJaxScript"]:
                problems.append(f"{rel}: {info['math']} math elements but no MathJax script")
            elif not info["mathJaxVersion"] or not info["mathJaxVersion"].startswith("3"):
                problems.append(f"{rel}: MathJax 3 did not start (version {info['mathJaxVersion']!r})")
            elif info["mjx"] == 0:
                problems.append(f"{rel}: {info['math']} math elements, none typeset (no mjx-container)")
            if info["mjxErrors"]:
                problems.append(f"{rel}: {info['mjxErrors']} MathJax errors (mjx-merror)")
    return problems, checked_math


@pytest.mark.browser
@pytest.mark.timeout(900)
def test_every_page_renders_offline_in_chromium(site, server, driver):
    pages = _pages(site)
    assert pages
    problems, checked_math = _inspect(driver, server, pages)
    assert not problems, f"{len(problems)} problem(s) over {len(pages)} pages:\n" + "\n".join(problems)
    assert checked_math > 0, "no page with math was found: the MathJax check checked nothing"


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_browser_checks_catch_a_broken_page(driver, tmp_path):
    """The checks above can fail: a page with a script error, a missing image, an unreachable
    CDN script and math that nothing typesets."""
    (tmp_path / "bad.html").write_text(
        '<html><head><script src="http://cdn.invalid/mathjax/tex-chtml.js"></script></head><body>'
        '<span class="math">\\(x^2\\)</span><img src="missing.png">'
        '<script>undefined_function();</script></body></html>')
    with _serve(tmp_path) as url:
        problems, checked_math = _inspect(driver, url, ["bad.html"])
    text = "\n".join(problems)
    assert checked_math == 1
    assert "undefined_function" in text, text
    assert "missing.png" in text, text
    assert "cdn.invalid" in text, text
    assert "MathJax 3 did not start" in text, text


def _screenshot(driver, path: Path, width=1366, max_height=6000):
    """The page from the top, as tall as its content (at most ``max_height`` pixels)."""
    size = driver.get_window_size()
    try:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, max(800, min(int(height), max_height)))
        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.3)
        driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(size["width"], size["height"])


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_screenshots_of_index_and_a_notebook_page(site, server, driver):
    out = site.parent / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    notebooks = sorted((site / "book" / "notebooks").glob("*.html"))
    assert notebooks, f"no notebook pages under {site / 'book' / 'notebooks'}"
    driver.get(f"{server}/index.html")
    # index.html may be a redirect to the first page: wait until it has landed
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if driver.execute_script("return document.readyState") == "complete" and \
                not driver.current_url.endswith("/index.html"):
            break
        time.sleep(0.1)
    driver.execute_async_script(INSPECT_JS)
    targets = {"index.png": None, f"{notebooks[0].stem}.png": notebooks[0]}
    shots = []
    for name, page in targets.items():
        if page is not None:
            driver.get(f"{server}/{page.relative_to(site).as_posix()}")
            driver.execute_async_script(INSPECT_JS)
        path = out / name
        _screenshot(driver, path)
        shots.append(path)
    for path in shots:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, f"{path} is not a real screenshot"
