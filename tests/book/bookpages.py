"""Reading the built book: the toc, its pages, and checks of what a reader sees.

Every check is a function of HTML text (and, for references, of the page's place on disk) that
returns a list of problems, empty when the page is fine, so that the tests can run them on the
built book and on small crafted pages alike. HTML is parsed with BeautifulSoup's ``html.parser``
backend (beautifulsoup4 comes with jupyter-book's theme and is in the ``test`` extra).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml
from bs4 import BeautifulSoup, Tag

ROOT = Path(__file__).resolve().parents[2]
HTML_ROOT = ROOT / "_build" / "html"
TOC = ROOT / "book" / "_toc.yml"
SCREENSHOTS = ROOT / "_build" / "screenshots"

# The build of the Makefile's `book` target, run from the repository root.
BUILD_ARGS = ("build", ".", "--config", "book/_config.yml", "--toc", "book/_toc.yml",
              "-W", "-n", "--keep-going")

# MyST-NB marks a cell's error and stderr outputs with these classes (`output traceback`,
# `output stderr`); `error` covers other renderers.
ERROR_OUTPUT_CLASSES = frozenset({"traceback", "stderr", "error"})
TRACEBACK_RE = re.compile(r"Traceback \(most recent call last\)")
# An exception or warning as Python prints it: `ValueError: ...`, `torch.foo.BarError: ...`,
# `/path/file.py:12: UserWarning: ...`. A CamelCase name is required, so prose about "an error"
# or a table column called "error" does not match.
EXCEPTION_RE = re.compile(
    r"(?m)(?:^\s*|:\d+:\s*)(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Warning)(?::|\s*$)"
)
# `<torch._C.Generator at 0x7f...>`: the repr, with its type where it shows.
OBJECT_REPR_RE = re.compile(r"(?:<[^<>\n]{0,100}?)?\bat 0x[0-9a-fA-F]+>?")
# What a cell shows when it ends with a plotting call instead of showing only the figure.
MATPLOTLIB_REPR_RE = re.compile(
    r"(?m)<Figure size \d+x\d+ with \d+ Axes>|^\s*\[?<?(?:Text|Line2D|Legend)\("
)
# TeX that MathJax should have turned into math, as it would show if it did not.
RAW_TEX_RE = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\[A-Za-z]{2,}")
REFRESH_URL_RE = re.compile(r"(?i)url\s*=\s*(\S+)")
PAGENAME_RE = re.compile(r"DOCUMENTATION_OPTIONS\.pagename\s*=\s*['\"]([^'\"]*)['\"]")
# Elements whose text a reader does not see as prose.
INVISIBLE_TAGS = ("script", "style", "noscript", "template")
CODE_TAGS = ("pre", "code")


# --------------------------------------------------------------------------- toc and pages


def load_toc(path: Path = TOC) -> dict:
    """The sphinx-external-toc tree of ``book/_toc.yml``."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def toc_entries(node: object) -> list[str]:
    """Every ``root`` and ``file`` entry of a toc tree, in reading order."""
    found: list[str] = []
    if isinstance(node, dict):
        if isinstance(node.get("root"), str):
            found.append(node["root"])
        if isinstance(node.get("file"), str):
            found.append(node["file"])
        for key, value in node.items():
            if key not in ("root", "file"):
                found.extend(toc_entries(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(toc_entries(item))
    return found


def chapter_entries(entries: Iterable[str]) -> list[str]:
    """The toc entries that are chapters (files under ``chapters/``), in toc order."""
    return [e for e in entries if e.startswith("chapters/")]


def page_path(entry: str, html_root: Path = HTML_ROOT) -> Path:
    """The page Sphinx writes for a toc entry: ``chapters/01_x`` -> ``chapters/01_x.html``."""
    stem = re.sub(r"\.(md|ipynb|rst)$", "", entry)
    return html_root / f"{stem}.html"


def parse(html: str) -> BeautifulSoup:
    """A parsed page (the standard library's parser, through BeautifulSoup)."""
    return BeautifulSoup(html, "html.parser")


def classes(element: Tag) -> set[str]:
    """The classes of an element."""
    value = element.get("class") or []
    return set(value.split() if isinstance(value, str) else value)


def text_without(element: Tag, drop: Iterable[str] = INVISIBLE_TAGS) -> str:
    """The text of a copy of ``element`` without the elements named in ``drop``."""
    copy = parse(str(element))
    for tag in copy.find_all(list(drop)):
        tag.decompose()
    return copy.get_text(" ")


def normalize(text: str) -> str:
    """Whitespace collapsed, permalink signs dropped: a title as a reader reads it."""
    return " ".join(text.replace("¶", " ").split())


# --------------------------------------------------------------------------- cell outputs


def cell_outputs(soup: BeautifulSoup) -> list[Tag]:
    """The cell output containers of a MyST-NB page."""
    return soup.select("div.cell_output")


def output_problems(html: str) -> list[str]:
    """Tracebacks, errors and stderr among a page's cell outputs, and docutils error markup."""
    soup = parse(html)
    problems = []
    for i, output in enumerate(cell_outputs(soup)):
        for element in [output, *output.find_all(True)]:
            bad = classes(element) & ERROR_OUTPUT_CLASSES
            if bad:
                snippet = normalize(element.get_text(" "))[:120]
                problems.append(f"output {i}: a {'/'.join(sorted(bad))} output: {snippet!r}")
        text = text_without(output)
        if TRACEBACK_RE.search(text):
            problems.append(f"output {i}: a traceback")
        for match in EXCEPTION_RE.finditer(text):
            problems.append(f"output {i}: an exception or warning: {match.group().strip()!r}")
    for element in soup.select(".system-message, .problematic"):
        problems.append(f"docutils error markup: {normalize(element.get_text(' '))[:120]!r}")
    return problems


def repr_problems(html: str) -> list[str]:
    """Object reprs (``<... at 0x7f...>``) anywhere in the visible text, and matplotlib reprs
    (``<Figure size ...>``, ``Text(...)``) shown as cell outputs."""
    soup = parse(html)
    problems = []
    body = soup.body or soup
    for match in OBJECT_REPR_RE.finditer(text_without(body)):
        problems.append(f"an object repr in the page: {match.group()!r}")
    for i, output in enumerate(cell_outputs(soup)):
        for match in MATPLOTLIB_REPR_RE.finditer(output.get_text("\n")):
            problems.append(f"output {i}: a matplotlib repr: {match.group().strip()!r}")
    return problems


# --------------------------------------------------------------------------- references


def local_target(page: Path, reference: str) -> tuple[Path, str] | None:
    """Where a reference of ``page`` leads on disk, and its fragment; None if it leaves the site
    (a scheme such as ``https:``, ``mailto:`` or ``data:``, or a protocol-relative ``//host``).
    A reference with an empty path (``#id``) leads to the page itself."""
    parts = urlsplit(reference.strip())
    if parts.scheme or parts.netloc or reference.strip().startswith("//"):
        return None
    path = unquote(parts.path)
    target = page if not path else (page.parent / path)
    if path.endswith("/") or (target.is_dir()):
        target = target / "index.html"
    return target.resolve(), unquote(parts.fragment)


def element_ids(html: str) -> set[str]:
    """The ids a fragment may name in a page (``id`` attributes and ``<a name>``)."""
    soup = parse(html)
    ids = {str(e["id"]) for e in soup.find_all(attrs={"id": True})}
    ids |= {str(e["name"]) for e in soup.find_all("a", attrs={"name": True})}
    return ids


def references(soup: BeautifulSoup) -> Iterator[tuple[str, str]]:
    """(``tag.attribute``, value) of every link and embedded resource of a page."""
    for tag, attribute in (("a", "href"), ("link", "href"), ("img", "src"), ("script", "src")):
        for element in soup.find_all(tag, attrs={attribute: True}):
            yield f"{tag}.{attribute}", str(element[attribute])


class IdCache:
    """The ids of pages on disk, each page read once."""

    def __init__(self) -> None:
        self._ids: dict[Path, set[str]] = {}

    def __call__(self, path: Path) -> set[str]:
        if path not in self._ids:
            self._ids[path] = element_ids(path.read_text(encoding="utf-8", errors="replace"))
        return self._ids[path]


def link_problems(html: str, page: Path, html_root: Path, ids: IdCache | None = None) -> list[str]:
    """Internal references of ``page`` (its text is ``html``) that lead nowhere: a file that is
    missing or outside ``html_root``, or a fragment that names no element of the target page."""
    ids = IdCache() if ids is None else ids
    soup = parse(html)
    own_ids = element_ids(html)
    root = html_root.resolve()
    here = page.resolve()
    problems = []
    for kind, reference in references(soup):
        found = local_target(page, reference)
        if found is None:
            continue
        target, fragment = found
        if target == here:
            if kind == "a.href" and fragment and fragment not in own_ids:
                problems.append(f"{kind} {reference!r}: no element id={fragment!r} on this page")
        elif not target.is_relative_to(root):
            problems.append(f"{kind} {reference!r} leaves the site ({target})")
        elif not target.is_file():
            problems.append(f"{kind} {reference!r}: no file {target.relative_to(root)}")
        elif kind == "a.href" and fragment and target.suffix == ".html":
            if fragment not in ids(target):
                where = target.relative_to(root)
                problems.append(f"{kind} {reference!r}: no element id={fragment!r} in {where}")
    return problems


def remote_resource_problems(html: str) -> list[str]:
    """Scripts and stylesheets loaded from another host: the book must read offline."""
    soup = parse(html)
    problems = []
    for element in soup.find_all("script", attrs={"src": True}):
        if local_target(Path("page.html"), str(element["src"])) is None:
            problems.append(f"a remote script: {element['src']}")
    for element in soup.find_all("link", attrs={"href": True}):
        rel = set(element.get("rel") or [])
        if rel & {"stylesheet", "preload", "modulepreload"}:
            if local_target(Path("page.html"), str(element["href"])) is None:
                problems.append(f"a remote {'/'.join(sorted(rel))}: {element['href']}")
    return problems


# --------------------------------------------------------------------------- figures and math


def figure_problems(html: str, page: Path) -> list[str]:
    """No figure among the cell outputs, or an output image whose file is missing or empty."""
    soup = parse(html)
    images = [img for output in cell_outputs(soup) for img in output.find_all("img")]
    problems = []
    on_disk = 0
    for img in images:
        src = str(img.get("src") or "")
        found = local_target(page, src) if src else None
        if src.startswith("data:image/"):
            continue  # embedded in the page: shown, but not a file
        if found is None:
            problems.append(f"an output image that is not a local file: {src!r}")
        elif not found[0].is_file() or found[0].stat().st_size == 0:
            problems.append(f"an output image whose file is missing or empty: {src!r}")
        else:
            on_disk += 1
    if not on_disk:
        problems.append(f"no figure (an <img> of a file) in any of {len(cell_outputs(soup))} "
                        "cell outputs")
    return problems


def caption_text(figure: Tag) -> str:
    """The caption of a ``<figure>`` as a reader reads it: its ``<figcaption>`` without the
    number (``Fig. 3``) and the permalink sign; empty when it has none."""
    figcaption = figure.find("figcaption")
    if figcaption is None:
        return ""
    copy = parse(str(figcaption))
    for element in copy.select(".caption-number, a.headerlink"):
        element.decompose()
    return normalize(copy.get_text(" "))


def caption_problems(html: str) -> list[str]:
    """Cell output images that are not a captioned, numbered figure: an ``<img>`` of a cell
    output must sit in a ``<figure>`` (inside the output) whose ``<figcaption>`` has text and a
    number (``<span class="caption-number">Fig. N</span>``, from MyST-NB's ``mystnb.figure``
    cell metadata with Sphinx's ``numfig``)."""
    soup = parse(html)
    problems = []
    for i, output in enumerate(cell_outputs(soup)):
        for img in output.find_all("img"):
            src = str(img.get("src") or "")[:80]
            figure = img.find_parent("figure")
            if figure is None or not any(parent is output for parent in figure.parents):
                problems.append(f"output {i}: an image outside a <figure>: {src!r}")
            elif figure.find("figcaption") is None:
                problems.append(f"output {i}: a figure without a <figcaption>: {src!r}")
            elif not caption_text(figure):
                problems.append(f"output {i}: a figure with an empty caption: {src!r}")
            elif figure.select_one("figcaption .caption-number") is None:
                problems.append(f"output {i}: a figure without a number: {src!r}")
    return problems


def has_math(html: str) -> bool:
    """Whether a page holds math for MathJax (Sphinx's ``math`` spans and divs)."""
    return bool(parse(html).select(".math"))


def mathjax_problems(html: str, page: Path, html_root: Path) -> list[str]:
    """A page with math must load MathJax from the site itself: a ``<script>`` whose src names
    MathJax, local, under ``html_root``, and present on disk."""
    soup = parse(html)
    if not soup.select(".math"):
        return []
    scripts = [str(s["src"]) for s in soup.find_all("script", attrs={"src": True})
               if "mathjax" in str(s["src"]).lower()]
    if not scripts:
        return ["the page has math but no MathJax script"]
    problems = []
    root = html_root.resolve()
    for src in scripts:
        found = local_target(page, src)
        if found is None:
            problems.append(f"MathJax comes from another host: {src}")
        elif not found[0].is_relative_to(root) or not found[0].is_file():
            problems.append(f"MathJax script {src!r} is not a file of the site ({found[0]})")
    return problems


def refresh_target(html: str, page: Path) -> Path | None:
    """Where a page's ``<meta http-equiv="refresh" content="0; url=...">`` redirects, if it
    does (Jupyter Book writes such an index.html when the toc's root is not ``index``)."""
    for meta in parse(html).find_all("meta", attrs={"http-equiv": True}):
        if str(meta["http-equiv"]).lower() != "refresh":
            continue
        match = REFRESH_URL_RE.search(str(meta.get("content") or ""))
        found = local_target(page, match.group(1).strip("'\" ")) if match else None
        return found[0] if found else None
    return None


def page_name(dom: str) -> str | None:
    """The Sphinx page name a page declares (``DOCUMENTATION_OPTIONS.pagename``), e.g.
    ``book/index``: where the page is, even after a browser followed a redirect to it."""
    match = PAGENAME_RE.search(dom)
    return match.group(1) if match else None


def pager_target(html: str, page: Path, direction: str = "next") -> Path | None:
    """Where the page's "next" (``a.right-next``) or "previous" (``a.left-prev``) link leads."""
    css = {"next": "a.right-next", "previous": "a.left-prev"}[direction]
    link = parse(html).select_one(css)
    if link is None or not link.get("href"):
        return None
    found = local_target(page, str(link["href"]))
    return found[0] if found else None


# --------------------------------------------------------------------------- after MathJax


def typeset_problems(dom: str) -> list[str]:
    """What shows that MathJax did not typeset a page's math, in its DOM after scripts ran: no
    ``mjx-container``, a Sphinx math element left without one, a MathJax error, or raw TeX
    (``$$``, ``\\(``, ``\\frac``...) in the visible prose (code blocks excepted)."""
    soup = parse(dom)
    problems = []
    containers = soup.find_all("mjx-container")
    if not containers:
        problems.append("MathJax produced no mjx-container")
    untypeset = [m for m in soup.select(".math") if m.find("mjx-container") is None]
    for element in untypeset[:5]:
        problems.append(f"math left as TeX: {normalize(element.get_text(' '))[:80]!r}")
    if len(untypeset) > 5:
        problems.append(f"... {len(untypeset)} math elements left as TeX in all")
    for error in soup.find_all("mjx-merror"):
        problems.append(f"a MathJax error: {error.get('data-mjx-error') or error.get_text()!r}")
    body = soup.body or soup
    visible = text_without(body, (*INVISIBLE_TAGS, *CODE_TAGS))
    for match in sorted(set(RAW_TEX_RE.findall(visible)))[:10]:
        problems.append(f"raw TeX in the visible text: {match!r}")
    return problems


def sidebar_links(dom: str) -> list[tuple[str, str]]:
    """(href, text) of the links of the primary sidebar's navigation."""
    soup = parse(dom)
    navs = soup.select(".bd-sidebar-primary nav, nav.bd-docs-nav, nav.bd-links")
    links = []
    for nav in navs:
        for a in nav.find_all("a", attrs={"href": True}):
            item = (str(a["href"]), normalize(a.get_text(" ")))
            if item not in links:
                links.append(item)
    return links


def page_title(dom: str) -> str:
    """The text of a page's first ``<h1>``, without its permalink."""
    soup = parse(dom)
    h1 = soup.find("h1")
    if h1 is None:
        return ""
    for permalink in h1.select("a.headerlink"):
        permalink.decompose()
    return normalize(h1.get_text(" "))
