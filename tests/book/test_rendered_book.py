"""The built book as a reader gets it: outputs without errors, figures with numbered captions,
working links, math that needs no CDN, and the pages in toc order.

The first half checks the checkers on small crafted pages (each must pass a good page and flag a
bad one); the second half runs them on ``_build/html``, built first if missing (conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bookpages import (
    IdCache,
    caption_problems,
    chapter_entries,
    figure_problems,
    has_math,
    link_problems,
    load_toc,
    mathjax_problems,
    output_problems,
    page_name,
    page_path,
    page_title,
    pager_target,
    refresh_target,
    remote_resource_problems,
    repr_problems,
    sidebar_links,
    toc_entries,
    typeset_problems,
)

ENTRIES = toc_entries(load_toc())
CHAPTERS = chapter_entries(ENTRIES)


def page(body: str, head: str = "") -> str:
    """A minimal HTML page."""
    return f"<!DOCTYPE html><html><head>{head}</head><body>{body}</body></html>"


def cell(output: str, source: str = "x = 1") -> str:
    """A MyST-NB code cell with one output."""
    return (f'<div class="cell docutils container"><div class="cell_input docutils container">'
            f"<pre>{source}</pre></div>"
            f'<div class="cell_output docutils container">{output}</div></div>')


def stream(text: str, kind: str = "stream") -> str:
    """A MyST-NB text output (``stream``, ``text_plain``, ``stderr``, ``traceback``)."""
    return (f'<div class="output {kind} highlight-myst-ansi notranslate">'
            f'<div class="highlight"><pre><span></span>{text}</pre></div></div>')


def write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# =========================================================================== the checkers


def test_toc_entries_keep_reading_order():
    toc = {"root": "book/index", "parts": [
        {"caption": "A", "chapters": [{"file": "chapters/01_a"}, {"file": "chapters/02_b"}]},
        {"caption": "B", "chapters": [{"file": "chapters/03_c", "sections": [{"file": "s/x"}]},
                                      {"file": "book/bibliography"}]},
    ]}
    entries = toc_entries(toc)
    assert entries == ["book/index", "chapters/01_a", "chapters/02_b", "chapters/03_c", "s/x",
                       "book/bibliography"]
    assert chapter_entries(entries) == ["chapters/01_a", "chapters/02_b", "chapters/03_c"]
    assert page_path("chapters/01_a.ipynb", Path("/h")) == Path("/h/chapters/01_a.html")


def test_output_problems_pass_clean_outputs_and_prose_about_errors():
    html = page("<p>The error of a box, and a ValueError: prose is not an output.</p>"
                + cell(stream("mean error 0.25\nerror | count\nErrors shrink"))
                + cell(stream("0.5", kind="text_plain")))
    assert output_problems(html) == []


@pytest.mark.parametrize(("output", "expected"), [
    (stream("Traceback (most recent call last):\n  File x", kind="traceback"), "traceback"),
    (stream("100%|#####| 10/10", kind="stderr"), "stderr"),
    (stream("Traceback (most recent call last):\n  ..."), "a traceback"),
    (stream("ValueError: shapes do not match"), "ValueError"),
    (stream("torch.OutOfMemoryError: CUDA"), "OutOfMemoryError"),
    (stream("/x/y.py:3: UserWarning: deprecated"), "UserWarning"),
])
def test_output_problems_flag_errors_in_outputs(output, expected):
    problems = output_problems(page(cell(output)))
    assert problems and any(expected in p for p in problems), problems


def test_output_problems_flag_docutils_error_markup():
    html = page('<div class="system-message"><p>Unknown directive type "foo".</p></div>')
    assert any("docutils" in p for p in output_problems(html))


def test_repr_problems():
    good = page("<p>Memory at 0 bytes.</p>" + cell(stream("0x1f is 31")))
    assert repr_problems(good) == []
    address = page(cell(stream("&lt;imbalance.Foo object at 0x7f3a2b1c&gt;")))
    assert any("0x7f3a2b1c" in p for p in repr_problems(address))
    figure = page(cell(stream("&lt;Figure size 640x480 with 1 Axes&gt;", kind="text_plain")))
    assert any("Figure size" in p for p in repr_problems(figure))
    text = page(cell(stream("Text(0.5, 1.0, 'Focal loss')", kind="text_plain")))
    assert any("Text(" in p for p in repr_problems(text))


def test_figure_problems(tmp_path):
    chapter = tmp_path / "chapters" / "c.html"
    write(tmp_path / "_images" / "a.png", "png")
    good = page(cell('<img alt="a" src="../_images/a.png" />'))
    assert figure_problems(good, chapter) == []
    assert any("no figure" in p for p in figure_problems(page(cell(stream("1"))), chapter))
    outside = page('<img src="../_images/a.png" />' + cell(stream("1")))
    assert any("no figure" in p for p in figure_problems(outside, chapter))
    missing = page(cell('<img src="../_images/a.png" />') + cell('<img src="../_images/b.png">'))
    assert any("b.png" in p for p in figure_problems(missing, chapter))
    write(tmp_path / "_images" / "empty.png", "")
    empty = page(cell('<img src="../_images/empty.png" />'))
    assert any("empty.png" in p for p in figure_problems(empty, chapter))


def figure(image: str, caption: str = "The loss against $p_t$.", number: str = "Fig. 3 ",
           name: str = "fig-loss") -> str:
    """An output image as MyST-NB renders a cell with ``mystnb.figure`` metadata."""
    number_span = f'<span class="caption-number">{number}</span>' if number else ""
    return (f'<figure class="align-default" id="{name}">{image}'
            f"<figcaption><p>{number_span}"
            f'<span class="caption-text">{caption}</span>'
            f'<a class="headerlink" href="#{name}" title="Link to this image">#</a></p>'
            "</figcaption></figure>")


def test_caption_problems_pass_captioned_figures():
    image = '<img alt="../_images/a.png" src="../_images/a.png" />'
    good = page("<p>Prose with <img src='logo.png' /> outside any cell.</p>"
                + cell(figure(image)) + cell(stream("no image here"))
                + cell('<figure class="align-default" id="fig-b"><img src="../_images/b.png" />'
                       '<figcaption><p><span class="caption-number">Fig. 4 </span>'
                       '<span class="caption-text">Two <em>series</em>.</span></p>'
                       "</figcaption></figure>"))
    assert caption_problems(good) == []


@pytest.mark.parametrize(("body", "expected"), [
    (cell('<img alt="_images/a.png" src="../_images/a.png" />'), "outside a <figure>"),
    (cell('<figure class="align-default"><img src="../_images/a.png" /></figure>'),
     "without a <figcaption>"),
    (cell(figure('<img src="../_images/a.png" />', caption="")), "empty caption"),
    (cell(figure('<img src="../_images/a.png" />', caption=" ")), "empty caption"),
    (cell(figure('<img src="../_images/a.png" />', number="")), "without a number"),
    ('<figure><figcaption><p>A caption around the cell</p></figcaption>'
     + cell('<img src="../_images/a.png" />') + "</figure>", "outside a <figure>"),
])
def test_caption_problems_flag_bare_output_images(body, expected):
    captioned = cell(figure('<img src="../_images/b.png" />'))
    problems = caption_problems(page(captioned + body))
    assert len(problems) == 1 and expected in problems[0], problems


def test_link_problems(tmp_path):
    root = tmp_path
    other = write(root / "chapters" / "b.html", page('<section id="there">b</section>'))
    write(root / "_static" / "s.css")
    write(root / "index.html", page("home"))
    this = root / "chapters" / "a.html"
    good = page('<p id="here"><a href="#here">x</a> <a href="b.html#there">y</a> '
                '<a href="../index.html">home</a> <a href="../">home</a> <a href="#">top</a>'
                '<a href="https://example.org/missing">web</a> <a href="mailto:a@b.c">m</a>'
                '<a href="b.html?x=1#there">q</a></p>',
                head='<link rel="stylesheet" href="../_static/s.css" />')
    assert link_problems(good, this, root) == []
    assert other.is_file()
    for bad, expected in [
        ('<a href="c.html">c</a>', "no file"),
        ('<a href="#nowhere">n</a>', "'nowhere'"),
        ('<a href="b.html#gone">g</a>', "'gone'"),
        ('<img src="../_images/x.png" />', "no file"),
        ('<script src="../_static/missing.js"></script>', "no file"),
        ('<a href="../../outside.html">o</a>', "leaves the site"),
    ]:
        problems = link_problems(page(bad), this, root, IdCache())
        assert len(problems) == 1 and expected in problems[0], (bad, problems)


def test_remote_resource_problems():
    local = ('<script src="_static/a.js"></script><link rel="stylesheet" href="_static/a.css">'
             '<link rel="canonical" href="https://example.org/a.html">'
             '<script>const URL = "https://unpkg.com/x.js";</script>')
    assert remote_resource_problems(page("", head=local)) == []
    cdn = ('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'
           '<link rel="stylesheet" href="//fonts.example.org/a.css">')
    assert len(remote_resource_problems(page("", head=cdn))) == 2


def test_mathjax_problems(tmp_path):
    write(tmp_path / "_static" / "mathjax" / "tex-chtml.js")
    this = tmp_path / "chapters" / "a.html"
    math = '<p><span class="math notranslate nohighlight">\\(x\\)</span></p>'
    local = '<script defer src="../_static/mathjax/tex-chtml.js"></script>'
    assert mathjax_problems(page(math, head=local), this, tmp_path) == []
    assert mathjax_problems(page("<p>no math</p>"), this, tmp_path) == []
    cdn = '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'
    assert any("another host" in p for p in mathjax_problems(page(math, cdn), this, tmp_path))
    gone = '<script src="../_static/mathjax/tex-svg.js"></script>'
    assert any("not a file" in p for p in mathjax_problems(page(math, gone), this, tmp_path))
    assert mathjax_problems(page(math), this, tmp_path) == ["the page has math but no MathJax "
                                                            "script"]
    assert has_math(page(math)) and not has_math(page("<p>$x$</p>"))


def test_pager_target(tmp_path):
    this = tmp_path / "chapters" / "b.html"
    html = page('<a class="left-prev" href="a.html">prev</a>'
                '<a class="right-next" href="../book/bibliography.html">next</a>')
    assert pager_target(html, this) == (tmp_path / "book" / "bibliography.html").resolve()
    assert pager_target(html, this, "previous") == (tmp_path / "chapters" / "a.html").resolve()
    assert pager_target(page("last"), this) is None


TYPESET = ('<span class="math notranslate nohighlight"><mjx-container class="MathJax" jax="CHTML">'
           '<mjx-math><mjx-mi></mjx-mi></mjx-math><mjx-assistive-mml><math><mi>x</mi></math>'
           "</mjx-assistive-mml></mjx-container></span>")


def test_typeset_problems_pass_typeset_math_and_tex_in_code():
    dom = page(f"<p>Let {TYPESET} be.</p><pre>label = r'$\\frac{{1}}{{2}}$'</pre>"
               "<code>$$</code><style>mjx-merror { color: red; }</style>"
               "<script>var tex = '\\\\frac';</script>")
    assert typeset_problems(dom) == []


@pytest.mark.parametrize(("body", "expected"), [
    ("<p>no math at all</p>", "no mjx-container"),
    (f'<p>{TYPESET} <span class="math">\\(\\frac{{a}}{{b}}\\)</span></p>', "left as TeX"),
    (f"<p>{TYPESET}</p><p>$$ FL = 1 $$</p>", "'$$'"),
    (f"<p>{TYPESET} and \\frac{{a}}{{b}}</p>", "\\\\frac"),
    (f'<p>{TYPESET}<mjx-merror data-mjx-error="Undefined control sequence"></mjx-merror></p>',
     "Undefined control sequence"),
])
def test_typeset_problems_flag_math_left_as_tex(body, expected):
    problems = typeset_problems(page(body))
    assert any(expected in p for p in problems), problems


def test_refresh_target_and_page_name(tmp_path):
    stub = '<meta http-equiv="Refresh" content="0; url=book/index.html" />'
    here = tmp_path / "index.html"
    assert refresh_target(stub, here) == (tmp_path / "book" / "index.html").resolve()
    assert refresh_target(page("<p>a page</p>"), here) is None
    dom = page("", head="<script>DOCUMENTATION_OPTIONS.pagename = 'chapters/01_a';</script>")
    assert page_name(dom) == "chapters/01_a"
    assert page_name(page("")) is None


def test_sidebar_links_and_page_title():
    dom = page('<div class="bd-sidebar-primary"><nav class="bd-docs-nav bd-links"><ul>'
               '<li><a class="reference internal" href="chapters/a.html">The  focal\nloss</a>'
               '</li></ul></nav></div><a href="elsewhere.html">not in the sidebar</a>'
               '<h1>The focal loss<a class="headerlink" href="#x">#</a></h1>')
    assert sidebar_links(dom) == [("chapters/a.html", "The focal loss")]
    assert page_title(dom) == "The focal loss"
    assert page_title(page("<p>untitled</p>")) == ""


# =========================================================================== the built book


@pytest.fixture(scope="module")
def ids() -> IdCache:
    """Element ids of the built pages, shared by the link checks."""
    return IdCache()


def assert_none(problems: list[str], where: str) -> None:
    """Fail with every problem, one a line."""
    assert not problems, f"{where}:\n  " + "\n  ".join(problems)


def read(path: Path) -> str:
    assert path.is_file(), f"{path} was not built: rebuild the book (make book)"
    return path.read_text(encoding="utf-8")


def test_the_toc_lists_chapters():
    assert CHAPTERS, "book/_toc.yml lists no chapters/ pages"


@pytest.mark.parametrize("entry", ENTRIES)
def test_every_toc_page_was_built(entry, html_root):
    assert page_path(entry, html_root).is_file(), f"no page for {entry}: rebuild the book"


@pytest.mark.parametrize("entry", CHAPTERS)
def test_chapter_outputs_show_no_errors(entry, html_root):
    assert_none(output_problems(read(page_path(entry, html_root))), entry)


@pytest.mark.parametrize("entry", CHAPTERS)
def test_chapter_shows_a_figure(entry, html_root):
    path = page_path(entry, html_root)
    assert_none(figure_problems(read(path), path), entry)


@pytest.mark.parametrize("entry", CHAPTERS)
def test_chapter_figures_have_captions(entry, html_root):
    assert_none(caption_problems(read(page_path(entry, html_root))), entry)


@pytest.mark.parametrize("entry", CHAPTERS)
def test_chapter_shows_no_object_reprs(entry, html_root):
    assert_none(repr_problems(read(page_path(entry, html_root))), entry)


@pytest.mark.parametrize("entry", ENTRIES)
def test_internal_links_resolve(entry, html_root, ids):
    path = page_path(entry, html_root)
    assert_none(link_problems(read(path), path, html_root, ids), entry)


@pytest.mark.parametrize("entry", ENTRIES)
def test_pages_load_nothing_from_other_hosts(entry, html_root):
    path = page_path(entry, html_root)
    html = read(path)
    assert_none(remote_resource_problems(html) + mathjax_problems(html, path, html_root), entry)


def test_the_chapters_have_math_served_by_the_site(html_root):
    built = [e for e in CHAPTERS if page_path(e, html_root).is_file()]
    with_math = [e for e in built if has_math(read(page_path(e, html_root)))]
    assert with_math, "no chapter holds math: is dollarmath still enabled?"
    path = page_path(with_math[0], html_root)
    assert_none(mathjax_problems(read(path), path, html_root), with_math[0])


def test_next_and_previous_follow_the_toc(html_root):
    pages = [page_path(e, html_root).resolve() for e in ENTRIES]
    for i, path in enumerate(pages):
        html = read(path)
        expected_next = pages[i + 1] if i + 1 < len(pages) else None
        expected_previous = pages[i - 1] if i > 0 else None
        assert pager_target(html, path, "next") == expected_next, f"next of {ENTRIES[i]}"
        assert pager_target(html, path, "previous") == expected_previous, f"prev of {ENTRIES[i]}"


def test_site_index_is_the_root_page_or_leads_to_it(html_root):
    index = html_root / "index.html"
    root = page_path(ENTRIES[0], html_root).resolve()
    if index.resolve() != root:
        assert refresh_target(read(index), index) == root, f"index.html does not lead to {root}"


def test_root_page_sidebar_lists_every_chapter(html_root):
    root = page_path(ENTRIES[0], html_root)
    linked = {(root.parent / href.split("#")[0]).resolve() for href, _ in
              sidebar_links(read(root))}
    missing = [e for e in CHAPTERS if page_path(e, html_root).resolve() not in linked]
    assert not missing, f"chapters missing from the sidebar of {ENTRIES[0]}: {missing}"


@pytest.mark.parametrize("entry", CHAPTERS)
def test_chapter_has_a_title(entry, html_root):
    assert page_title(read(page_path(entry, html_root))), f"{entry} has no <h1>"
