"""Static check of the built book (``_build/html``): does it work offline, with nothing broken?

Parses every ``.html`` page and every local ``.css`` file the pages use, and reports

* ``broken``: a local ``href``/``src``/``srcset``/``data``/``poster`` (or a CSS ``url(...)``)
  whose file does not exist;
* ``bad_anchors``: a link to ``page.html#id`` (or ``#id``) where ``page.html`` has no such id;
* ``external``: a resource the browser would *load* from the network (``<script src>``,
  ``<link rel=stylesheet|preload|icon|...>``, ``<img>``, ``<iframe>``, CSS ``@import``/``url()``
  of fonts ...) — a CDN dependency that breaks the site offline;
* ``external_links``: plain ``<a href="https://...">`` links: fine (the reader clicks them),
  listed for information only.

Usage: ``python tests/site_check.py [_build/html]`` (exit status 1 when anything is wrong),
or ``check_site(path)`` from a test.
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

# attributes whose URL the browser fetches when it renders the page
LOADED = {
    ("script", "src"), ("img", "src"), ("img", "srcset"), ("iframe", "src"), ("embed", "src"),
    ("source", "src"), ("source", "srcset"), ("video", "src"), ("video", "poster"), ("audio", "src"),
    ("track", "src"), ("object", "data"), ("input", "src"), ("image", "href"), ("use", "href"),
}
# <link rel=...> values that make the browser fetch the href
LOADED_LINK_RELS = {"stylesheet", "preload", "modulepreload", "icon", "shortcut", "apple-touch-icon",
                    "manifest", "prefetch", "mask-icon"}
SKIP_SCHEMES = ("mailto:", "javascript:", "data:", "tel:", "about:", "blob:")
CSS_URL = re.compile(r"""url\(\s*(['"]?)([^'")]+)\1\s*\)|@import\s+(['"])([^'"]+)\3""")


@dataclass
class Problem:
    page: str   # relative to the site root
    where: str  # "<tag attr>" or "css url()"
    url: str
    why: str = ""

    def __str__(self):
        return f"{self.page}: {self.where} {self.url!r}" + (f" ({self.why})" if self.why else "")


@dataclass
class Report:
    root: Path
    pages: list = field(default_factory=list)
    broken: list = field(default_factory=list)
    bad_anchors: list = field(default_factory=list)
    external: list = field(default_factory=list)
    external_links: list = field(default_factory=list)
    images: int = 0

    @property
    def ok(self) -> bool:
        return not (self.broken or self.bad_anchors or self.external)

    def summary(self, limit: int = 40) -> str:
        lines = [f"site {self.root}: {len(self.pages)} pages, {self.images} images, "
                 f"{len(self.broken)} broken, {len(self.bad_anchors)} bad anchors, "
                 f"{len(self.external)} external resources, {len(self.external_links)} external links"]
        for title, items in (("broken local references", self.broken), ("anchors not found", self.bad_anchors),
                             ("resources loaded from the network", self.external)):
            if items:
                lines.append(f"{title}:")
                lines += [f"  {p}" for p in items[:limit]]
                if len(items) > limit:
                    lines.append(f"  ... and {len(items) - limit} more")
        return "\n".join(lines)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.refs = []   # (tag, attr, url, loaded)
        self.ids = set()
        self.inline_css = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        if tag == "link":
            rels = set(a.get("rel", "").lower().split())
            if a.get("href"):
                self.refs.append((tag, "href", a["href"], bool(rels & LOADED_LINK_RELS)))
        elif tag in ("a", "area"):
            if a.get("href"):
                self.refs.append((tag, "href", a["href"], False))
        for attr in ("src", "srcset", "data", "poster", "href", "xlink:href"):
            if (tag, attr.replace("xlink:", "")) in LOADED and a.get(attr):
                values = [part.strip().split()[0] for part in a[attr].split(",") if part.strip()] \
                    if attr == "srcset" else [a[attr]]
                for v in values:
                    self.refs.append((tag, attr, v, True))
        if a.get("style") and "url(" in a["style"]:
            self.inline_css.append(a["style"])
        self._in_style = tag == "style"

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.inline_css.append(data)


def _is_external(url: str) -> bool:
    return url.startswith("//") or urlsplit(url).scheme in ("http", "https", "ftp", "ws", "wss")


def _css_urls(text: str):
    for m in CSS_URL.finditer(text):
        yield (m.group(2) or m.group(4) or "").strip()


def _resolve(base: Path, url: str, root: Path):
    """Local target of ``url`` relative to file ``base``: (path or None, fragment)."""
    parts = urlsplit(url)
    target = unquote(parts.path)
    if not target:
        return base, parts.fragment
    path = (root / target.lstrip("/")) if target.startswith("/") else (base.parent / target)
    path = Path(*path.parts)  # keep ".." resolution lexical, like a browser
    try:
        path = path.resolve()
    except OSError:
        return None, parts.fragment
    if path.is_dir():
        path = path / "index.html"
    return path, parts.fragment


def check_site(root, check_anchors: bool = True) -> Report:
    """Crawl every page under ``root`` (a built ``_build/html``); see the module docstring."""
    root = Path(root).resolve()
    report = Report(root)
    pages = sorted(root.rglob("*.html"))
    report.pages = [str(p.relative_to(root)) for p in pages]
    parsed, anchors = {}, defaultdict(list)
    css_files = set()
    for page in pages:
        parser = _Page()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        parsed[page] = parser
    for page, parser in parsed.items():
        rel = str(page.relative_to(root))
        for css in parser.inline_css:
            for url in _css_urls(css):
                _check_ref(report, root, page, rel, "inline css url()", url, True, css_files, anchors)
        for tag, attr, url, loaded in parser.refs:
            if tag == "img" and attr == "src":
                report.images += 1
            _check_ref(report, root, page, rel, f"<{tag} {attr}>", url, loaded, css_files, anchors)
    # local stylesheets: their fonts and images (and @imports) must be local too
    seen = set()
    while css_files - seen:
        css = sorted(css_files - seen)[0]
        seen.add(css)
        rel = str(css.relative_to(root)) if css.is_relative_to(root) else str(css)
        text = css.read_text(encoding="utf-8", errors="replace")
        text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # commented-out rules load nothing
        for url in _css_urls(text):
            _check_ref(report, root, css, rel, "css url()", url, True, css_files, anchors, from_css=True)
    if check_anchors:
        for (target, fragment), sources in anchors.items():
            ids = parsed[target].ids if target in parsed else None
            if ids is not None and fragment not in ids and unquote(fragment) not in ids:
                for rel, where, url in sources:
                    report.bad_anchors.append(Problem(rel, where, url, f"no id {fragment!r} in "
                                                                       f"{target.relative_to(root)}"))
    return report


def _check_ref(report, root, base, rel, where, url, loaded, css_files, anchors, from_css=False):
    url = url.strip()
    if not url or url.lower().startswith(SKIP_SCHEMES) or url.startswith("{{"):
        return
    if _is_external(url):
        (report.external if loaded else report.external_links).append(Problem(rel, where, url))
        return
    if url.startswith("#") and from_css:
        return  # an SVG filter reference, not a file
    path, fragment = _resolve(base, url, root)
    if path is None or not path.is_file():
        report.broken.append(Problem(rel, where, url, "no such file"))
        return
    if path.suffix == ".css" and loaded:
        css_files.add(path)
    if fragment and path.suffix == ".html" and where.startswith("<a"):
        anchors[(path, fragment)].append((rel, where, url))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0] if argv else "_build/html")
    if not (root / "index.html").is_file():
        print(f"{root}/index.html not found: build the book first (vqpaper book)", file=sys.stderr)
        return 2
    report = check_site(root)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
