"""The book in a browser: headless Chromium opens the built site from a local web server, with
every other host unreachable, and sees typeset math and working navigation.

Screenshots of the pages it opens go to ``_build/screenshots/``. Without Chromium these tests
fail when ``CI`` is set and are skipped otherwise (conftest.py).
"""

from __future__ import annotations

import json
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from bookpages import (
    SCREENSHOTS,
    chapter_entries,
    has_math,
    load_toc,
    page_name,
    page_path,
    page_title,
    parse,
    sidebar_links,
    toc_entries,
    typeset_problems,
)
from browser import WINDOW_SIZE, Chromium, Site
from PIL import Image

ENTRIES = toc_entries(load_toc())
CHAPTERS = chapter_entries(ENTRIES)
# The browser opens this many chapters: the first ones, in toc order, that hold math.
OPENED = 2
IGNORED_MISSING = ("/favicon.ico",)


@dataclass
class Opened:
    """A chapter opened from the index page's sidebar."""

    entry: str
    url: str
    link_text: str
    dom: str


def site_url(site: Site, entry: str, html_root: Path) -> str:
    """The URL of a toc entry's page on the local server."""
    return urljoin(site.url, page_path(entry, html_root).relative_to(html_root).as_posix())


def same_page(url: str, other: str) -> bool:
    """Whether two URLs name the same page (fragments and queries aside)."""
    a, b = urlsplit(url), urlsplit(other)
    return (a.scheme, a.netloc, a.path) == (b.scheme, b.netloc, b.path)


def check_screenshot(path: Path) -> None:
    """A PNG of the window's size that is not a blank page."""
    with Image.open(path) as image:
        assert image.format == "PNG", f"{path} is not a PNG"
        assert image.size == WINDOW_SIZE, f"{path} is {image.size}, not {WINDOW_SIZE}"
        low, high = image.convert("L").getextrema()
    assert high - low > 64, f"{path} is blank (grey levels {low}..{high})"


def failed_requests(site: Site) -> list[tuple[str, int]]:
    """The requests the server could not answer, but for the favicon browsers ask for anyway."""
    return [(p, c) for p, c in site.failed() if urlsplit(p).path not in IGNORED_MISSING]


@pytest.fixture(scope="module")
def index_dom(chromium: Chromium, site: Site) -> str:
    """The DOM, after its scripts ran, of the page a browser shows for the site's index.html."""
    return chromium.dump_dom(urljoin(site.url, "index.html"))


@pytest.fixture(scope="module")
def index_url(site: Site, index_dom: str) -> str:
    """Where the page of ``index_dom`` is: index.html may redirect (to the toc's root page),
    and the page's links are relative to where it is."""
    name = page_name(index_dom)
    assert name, "the index page does not declare its Sphinx page name"
    return urljoin(site.url, f"{name}.html")


@pytest.fixture(scope="module")
def math_chapters(html_root: Path) -> list[str]:
    """The first OPENED chapters, in toc order, whose page holds math."""
    pages = [page_path(e, html_root) for e in CHAPTERS]
    found = [e for e, p in zip(CHAPTERS, pages, strict=True)
             if p.is_file() and has_math(p.read_text(encoding="utf-8"))][:OPENED]
    assert len(found) == OPENED, f"fewer than {OPENED} chapters with math: {found}"
    return found


@pytest.fixture(scope="module")
def opened(chromium: Chromium, index_url: str, index_dom: str, math_chapters: list[str],
           site: Site, html_root: Path) -> list[Opened]:
    """The math chapters, each opened through its link in the index page's sidebar."""
    links = sidebar_links(index_dom)
    pages = []
    for entry in math_chapters:
        want = site_url(site, entry, html_root)
        matching = [(href, text) for href, text in links if same_page(urljoin(index_url, href),
                                                                        want)]
        assert matching, f"the index page's sidebar has no link to {entry}: {links}"
        href, text = matching[0]
        url = urljoin(index_url, href)
        pages.append(Opened(entry, url, text, chromium.dump_dom(url)))
    return pages


def test_index_page_renders(chromium: Chromium, site: Site, index_url: str, index_dom: str,
                            html_root: Path):
    assert same_page(index_url, site_url(site, ENTRIES[0], html_root)), (
        f"index.html shows {index_url}, not the toc's root {ENTRIES[0]}")
    assert page_title(index_dom), "the index page has no <h1>"
    assert (urlsplit(index_url).path, 200) in site.requests
    url = urljoin(site.url, "index.html")
    check_screenshot(chromium.screenshot(url, SCREENSHOTS / "index.png"))


def test_index_sidebar_links_every_chapter(index_url: str, index_dom: str, site: Site,
                                           html_root: Path):
    targets = [urljoin(index_url, href) for href, _ in sidebar_links(index_dom)]
    missing = [e for e in CHAPTERS
               if not any(same_page(t, site_url(site, e, html_root)) for t in targets)]
    assert not missing, f"chapters the index page's sidebar does not link: {missing}"


@pytest.mark.parametrize("position", range(OPENED), ids=[f"chapter{i + 1}" for i in range(OPENED)])
def test_sidebar_link_opens_the_chapter(opened: list[Opened], position: int, site: Site):
    page = opened[position]
    assert page.link_text, f"the sidebar link to {page.entry} has no text"
    assert page_title(page.dom) == page.link_text, (
        f"{page.url} is titled {page_title(page.dom)!r}, its sidebar link {page.link_text!r}")
    path = urlsplit(page.url).path
    assert (path, 200) in site.requests, f"the server did not serve {path}: {site.requests[-5:]}"


@pytest.mark.parametrize("position", range(OPENED), ids=[f"chapter{i + 1}" for i in range(OPENED)])
def test_math_is_typeset_offline(opened: list[Opened], position: int, site: Site,
                                 chromium: Chromium):
    page = opened[position]
    problems = typeset_problems(page.dom)
    assert not problems, f"{page.url}:\n  " + "\n  ".join(problems)
    mathjax = [(p, c) for p, c in site.requests if "/mathjax/" in p.lower()]
    assert any(c == 200 for _, c in mathjax), f"MathJax was not loaded from the site: {mathjax}"
    assert failed_requests(site) == [], "the browser asked for files the site lacks"
    name = Path(page.entry).name
    check_screenshot(chromium.screenshot(page.url, SCREENSHOTS / f"{name}.png"))


@pytest.mark.parametrize("position", range(OPENED), ids=[f"chapter{i + 1}" for i in range(OPENED)])
def test_next_link_goes_to_the_next_page_in_toc_order(opened: list[Opened], position: int,
                                                       site: Site, html_root: Path,
                                                       index_dom: str, index_url: str):
    page = opened[position]
    following = ENTRIES[ENTRIES.index(page.entry) + 1]
    link = parse(page.dom).select_one("a.right-next")
    assert link is not None and link.get("href"), f"{page.entry} has no 'next' link"
    target = urljoin(page.url, str(link["href"]))
    assert same_page(target, site_url(site, following, html_root)), (
        f"'next' of {page.entry} leads to {target}, not to {following}")
    with urllib.request.urlopen(target, timeout=30) as response:
        assert response.status == 200
        html = response.read().decode("utf-8")
    titles = [text for href, text in sidebar_links(index_dom)
              if same_page(urljoin(index_url, href), target)]
    assert titles and page_title(html) == titles[0], (
        f"{target} is titled {page_title(html)!r}; the sidebar calls it {titles}")


# Measures, once the page has loaded, every code cell's and output's <pre>: whether it scrolls
# sideways, and how many characters of its font its text box holds.
MEASURE_SCRIPT = """<script>window.addEventListener("load", () => {
  const rows = [...document.querySelectorAll("div.cell_input pre, div.cell_output pre")].map(p => {
    const probe = document.createElement("span");
    probe.textContent = "x".repeat(100);
    p.appendChild(probe);
    const char = probe.getBoundingClientRect().width / 100;
    probe.remove();
    const style = getComputedStyle(p);
    const box = p.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const widest = Math.max(...p.textContent.split("\\n").map(line => line.length));
    return {input: p.closest("div.cell_input") !== null, fits: Math.floor(box / char),
            widest: widest, scrolls: p.scrollWidth > p.clientWidth + 1,
            start: p.textContent.slice(0, 60)};
  });
  const out = document.createElement("div");
  out.id = "code-width-measure";
  out.textContent = JSON.stringify(rows);
  document.body.appendChild(out);
});</script>"""


@pytest.mark.parametrize("entry", CHAPTERS, ids=[Path(e).name for e in CHAPTERS])
def test_code_fits_the_page(entry: str, chromium: Chromium, site: Site, html_root: Path):
    """At the screenshots' 1280-px window, beside the page's contents, no code cell scrolls
    sideways (the chapters keep code within 88 characters, and the book's stylesheet sets the
    size that makes 88 fit). Printed output is measured too but not yet held to it: about twenty
    printed lines are wider (summaries, provenance lines), to be wrapped in their chapters."""
    page = page_path(entry, html_root)
    probe = page.with_name(f"{page.stem}.measure.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>",
                                                              MEASURE_SCRIPT + "</body>"),
                     encoding="utf-8")
    try:
        dom = chromium.dump_dom(urljoin(site.url, probe.relative_to(html_root).as_posix()),
                                window_size=WINDOW_SIZE)
    finally:
        probe.unlink()
    found = re.search(r'<div id="code-width-measure">(.*?)</div>', dom, re.S)
    assert found, f"the measuring script did not run on {entry}"
    rows = json.loads(parse(found.group(1)).get_text())
    assert any(r["input"] for r in rows), f"{entry}: no code cell measured"
    scrolling = [f"code ({r['widest']} characters, {r['fits']} fit): {r['start']!r}"
                 for r in rows if r["scrolls"] and r["input"]]
    assert not scrolling, f"{entry} at {WINDOW_SIZE[0]} px:\n  " + "\n  ".join(scrolling)
    assert min(r["fits"] for r in rows if r["input"]) >= 88
