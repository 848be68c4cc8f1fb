"""The repository agrees with itself: environments, dependency ranges, notebooks, hints, links,
toc."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
ENVIRONMENT = ROOT / "environment.yml"
MAKEFILE = ROOT / "Makefile"
TOC = ROOT / "book" / "_toc.yml"
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))

# The rendered book shows this many characters of a code line before it scrolls sideways (at a
# 1280-px window, with the code size of book/_static/imbalance.css; tests/book checks it there)
# (ruff's line-length, 100, is for the package; the chapters need less).
PAGE_WIDTH = 88

# The GPU machines run these; the floors in pyproject.toml must admit them.
GPU_TORCH = Version("2.11")
GPU_TORCHVISION = Version("0.26")

EXTRAS_RE = re.compile(r"""pip\s+install\b[^\n]*?-e\s+["']?\.\[([^\]]*)\]""")


# --------------------------------------------------------------------------- helpers


def load_pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


def load_environment() -> dict:
    return yaml.safe_load(ENVIRONMENT.read_text(encoding="utf-8"))


def split_extras(text: str) -> set[str]:
    return {e.strip() for e in text.split(",") if e.strip()}


def makefile_extras() -> set[str]:
    found = EXTRAS_RE.findall(MAKEFILE.read_text(encoding="utf-8"))
    assert len(found) == 1, f"expected one `pip install -e .[...]` line in the Makefile: {found}"
    return split_extras(found[0])


def environment_parts() -> tuple[list[str], list[str]]:
    """(conda dependencies as strings, pip dependencies) of environment.yml."""
    conda, pip = [], []
    for dep in load_environment()["dependencies"]:
        if isinstance(dep, dict):
            assert set(dep) == {"pip"}, f"unexpected section in environment.yml: {dep}"
            pip.extend(dep["pip"])
        else:
            conda.append(str(dep))
    return conda, pip


def environment_package_extras() -> set[str]:
    """Extras of the line of environment.yml's pip section that installs this package."""
    _, pip = environment_parts()
    own = [
        line for line in pip if re.fullmatch(r"""(-e\s+)?["']?\.(\[[^\]]*\])?["']?""", line.strip())
    ]
    assert len(own) == 1, f"environment.yml must pip-install the package once: {pip}"
    match = re.search(r"\[([^\]]*)\]", own[0])
    return split_extras(match.group(1)) if match else set()


def conda_name_and_spec(dep: str) -> tuple[str, str]:
    """`conda-forge::python=3.11` -> ("python", "=3.11")."""
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", dep.split("::")[-1].strip())
    assert match, f"cannot read the conda dependency {dep!r}"
    return match.group(1).lower(), match.group(2).strip()


def notebook_problems(path: Path) -> list[str]:
    """What keeps a committed notebook from being clean: outputs, counts, a foreign kernel."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i}: has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i}: execution_count is {cell['execution_count']}")
    kernel = nb.get("metadata", {}).get("kernelspec", {}).get("name")
    if kernel != "python3":
        problems.append(f"kernelspec name is {kernel!r}, not 'python3'")
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    first = "".join(code[0].get("source", "")) if code else ""
    if not first.startswith("%matplotlib inline"):
        # Executed headless (nbclient: nbval and the book), a notebook without it shows only
        # some of its figures, silently.
        problems.append("the first code cell does not start with %matplotlib inline")
    return problems


def long_code_lines(path: Path, width: int = PAGE_WIDTH) -> list[str]:
    """Code-cell lines wider than `width`, as `name cell i line j (n chars): text` (j from 1)."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    found = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        for j, line in enumerate("".join(cell.get("source", "")).splitlines(), 1):
            if len(line) > width:
                found.append(f"{Path(path).name} cell {i} line {j} ({len(line)} chars): {line}")
    return found


def toc_files(node) -> list[str]:
    """Every `root` and `file` entry of a sphinx-external-toc tree."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("root", "file") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(toc_files(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(toc_files(item))
    return found


def toc_path(entry: str) -> Path | None:
    """The file a toc entry names (entries may omit the extension)."""
    base = ROOT / entry
    candidates = [base] if base.suffix in (".md", ".ipynb") else []
    candidates += [base.with_name(base.name + ext) for ext in (".md", ".ipynb")]
    return next((p for p in candidates if p.is_file()), None)


# --------------------------------------------------------------------------- environments


def test_makefile_and_environment_install_the_same_existing_extras():
    declared = set(load_pyproject()["project"]["optional-dependencies"])
    make, env = makefile_extras(), environment_package_extras()
    assert make, "the Makefile installs the package without extras"
    assert make <= declared, f"Makefile extras missing from pyproject: {make - declared}"
    assert env <= declared, f"environment.yml extras missing from pyproject: {env - declared}"
    assert env == make, f"environment.yml installs {sorted(env)}, the Makefile {sorted(make)}"


def test_environment_pins_only_python_and_pip():
    conda, pip = environment_parts()
    names = {conda_name_and_spec(dep)[0] for dep in conda}
    assert {"python", "pip"} <= names, f"environment.yml must provide python and pip: {conda}"
    pinned = [d for d in conda if conda_name_and_spec(d)[0] not in ("python", "pip")]
    pinned = [d for d in pinned if conda_name_and_spec(d)[1]]
    pinned += [line for line in pip if re.search(r"[=<>~!]", line.split("[")[0])]
    assert not pinned, f"environment.yml pins {pinned}: versions live in pyproject.toml"


def test_environment_python_satisfies_requires_python():
    conda, _ = environment_parts()
    specs = [conda_name_and_spec(d)[1] for d in conda if conda_name_and_spec(d)[0] == "python"]
    assert len(specs) == 1 and specs[0], "environment.yml must name one python version"
    version = specs[0].lstrip("=").removesuffix(".*")
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", version), f"name one version: python{specs[0]}"
    requires = SpecifierSet(load_pyproject()["project"]["requires-python"])
    assert Version(version) in requires, f"python {version} does not satisfy {requires}"


# --------------------------------------------------------------------------- dependencies


def all_requirements() -> list[Requirement]:
    project = load_pyproject()["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines.extend(extra)
    return [Requirement(line) for line in lines]


def test_dependencies_are_ranges_not_pins():
    requirements = all_requirements()
    assert requirements
    pinned = [str(r) for r in requirements if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not pinned, f"exact pins in pyproject.toml: {pinned}"


@pytest.mark.parametrize(
    ("name", "gpu_version"), [("torch", GPU_TORCH), ("torchvision", GPU_TORCHVISION)]
)
def test_torch_floors_admit_the_gpu_versions(name, gpu_version):
    matching = [r for r in all_requirements() if r.name.lower() == name]
    assert len(matching) == 1, f"{name} must be a dependency exactly once"
    specifier = matching[0].specifier
    assert any(s.operator == ">=" for s in specifier), f"{name} has no floor: {specifier}"
    assert specifier.contains(gpu_version, prereleases=True), (
        f"{name}{specifier} does not admit {gpu_version}"
    )


# --------------------------------------------------------------------------- notebooks


def write_notebook(path: Path, cells: list[dict], kernel: str = "python3") -> Path:
    nb = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": kernel, "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def code_cell(source: str, outputs=(), execution_count=None) -> dict:
    return {
        "cell_type": "code",
        "id": re.sub(r"\W", "-", source)[:40],
        "metadata": {},
        "source": source,
        "outputs": list(outputs),
        "execution_count": execution_count,
    }


def test_notebook_problems_accepts_a_clean_notebook(tmp_path):
    md = {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": "# Title"}
    path = write_notebook(tmp_path / "good.ipynb", [md, code_cell("%matplotlib inline\nx = 1")])
    assert notebook_problems(path) == []


def test_notebook_problems_flags_outputs_counts_and_kernel(tmp_path):
    output = {"output_type": "stream", "name": "stdout", "text": "1\n"}
    cells = [code_cell("print(1)", outputs=[output], execution_count=3), code_cell("y = 2")]
    path = write_notebook(tmp_path / "bad.ipynb", cells, kernel="imbalance-dev")
    problems = notebook_problems(path)
    assert any("outputs" in p for p in problems), problems
    assert any("execution_count" in p for p in problems), problems
    assert any("kernelspec" in p for p in problems), problems
    assert any("%matplotlib inline" in p for p in problems), problems
    assert len(problems) == 4, problems


@pytest.mark.parametrize("notebook", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_committed_notebooks_carry_no_outputs(notebook):
    assert notebook_problems(notebook) == []


def test_long_code_lines_names_notebook_cell_and_line(tmp_path):
    wide = "x = " + "1 + " * 30 + "1"
    md = {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": "word " * 40}
    cells = [md, code_cell("%matplotlib inline\ny = 2"), code_cell(f"y = 2\n{wide}\n")]
    path = write_notebook(tmp_path / "wide.ipynb", cells)
    assert long_code_lines(path) == [f"wide.ipynb cell 2 line 2 ({len(wide)} chars): {wide}"]


def test_chapter_code_fits_the_page():
    assert CHAPTERS, "no chapters found"
    too_wide = [line for notebook in CHAPTERS for line in long_code_lines(notebook)]
    assert not too_wide, (
        f"code lines wider than {PAGE_WIDTH} characters scroll sideways in the book:\n"
        + "\n".join(too_wide)
    )


# --------------------------------------------------------------------------- exercises

HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
CODE_FENCE = re.compile(r"^\s*(```|~~~)")
EXERCISE_ITEM = re.compile(r"^\d+\. ")
HINT_FENCE = re.compile(r"^( +):::\{admonition\} Hint\s*$")


def exercise_sections(path: Path) -> list[str]:
    """The markdown under each heading that contains "Exercises", up to the next heading of the
    same or a higher level; the notebook's markdown cells are read as one document, and lines
    inside code fences are never headings."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    lines = [line for cell in nb.get("cells", []) if cell.get("cell_type") == "markdown"
             for line in "".join(cell.get("source", "")).splitlines()]
    sections, current, level, fenced = [], None, 0, False
    for line in lines:
        if CODE_FENCE.match(line):
            fenced = not fenced
        heading = None if fenced else HEADING.match(line)
        if heading and current is not None and len(heading.group(1)) <= level:
            sections.append("\n".join(current))
            current = None
        if heading and "Exercises" in heading.group(2):
            current, level = [], len(heading.group(1))
        elif current is not None:
            current.append(line)
    if current is not None:
        sections.append("\n".join(current))
    return sections


def exercise_and_hint_counts(section: str) -> tuple[int, int]:
    """(exercises, collapsed hints) of an exercise section. An exercise is a top-level numbered
    item (`1. ` at the start of a line); a hint is an indented `:::{admonition} Hint` fence (so
    that it belongs to a list item) followed by `:class: dropdown` at the same indentation."""
    lines = section.splitlines()
    items = sum(1 for line in lines if EXERCISE_ITEM.match(line))
    hints = 0
    for line, following in zip(lines, lines[1:], strict=False):
        fence = HINT_FENCE.match(line)
        if fence and following.rstrip() == f"{fence.group(1)}:class: dropdown":
            hints += 1
    return items, hints


def test_exercise_and_hint_counts_find_a_missing_hint():
    hint = "   :::{admonition} Hint\n   :class: dropdown\n   Look at $g$.\n   :::\n"
    text = f"1. **One.** Do this.\n\n{hint}\n2. **Two.** Do that,\n   and more.\n"
    assert exercise_and_hint_counts(text) == (2, 1)  # the second hint is missing
    assert exercise_and_hint_counts(f"{text}\n{hint}") == (2, 2)
    not_collapsed = hint.replace("dropdown", "tip")
    assert exercise_and_hint_counts(f"{text}\n{not_collapsed}") == (2, 1)
    outside_the_item = hint.replace("   ", "")  # at column 0 it ends the list
    assert exercise_and_hint_counts(f"{text}\n{outside_the_item}") == (2, 1)


def test_exercise_sections_read_only_the_exercises(tmp_path):
    sources = [
        "# 1. Title\n\n1. a numbered list\n2. in the prose",
        "## Exercises\n\n1. **One.** Do this.\n\n```sh\n# a comment, not a heading\n```",
        "2. **Two.** Do that.\n\n## Further reading\n\n1. not an exercise",
    ]
    cells = [{"cell_type": "markdown", "id": f"m{i}", "metadata": {}, "source": s}
             for i, s in enumerate(sources)]
    path = write_notebook(tmp_path / "exercises.ipynb", cells)
    sections = exercise_sections(path)
    assert len(sections) == 1, sections
    assert exercise_and_hint_counts(sections[0]) == (2, 0)


@pytest.mark.parametrize("notebook", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_every_exercise_has_a_collapsed_hint(notebook):
    sections = exercise_sections(notebook)
    assert sections, f"{notebook.name}: no markdown under an 'Exercises' heading"
    counts = [exercise_and_hint_counts(section) for section in sections]
    items, hints = sum(c[0] for c in counts), sum(c[1] for c in counts)
    assert items > 0, f"{notebook.name}: no numbered exercises under 'Exercises'"
    assert hints == items, (
        f"{notebook.name}: {items} exercises but {hints} collapsed hints "
        "(:::{admonition} Hint with :class: dropdown, indented into its item)"
    )


# --------------------------------------------------------------------------- bibliography

BIB = ROOT / "book" / "references.bib"
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")


def bib_keys(text: str) -> list[str]:
    """The keys of the entries of a BibTeX file, in order."""
    return re.findall(r"^@\w+\{([^,\s]+),", text, re.M)


def cited_keys(text: str) -> set[str]:
    """The keys cited with MyST's ``{cite}`, ``{cite:p}`` or ``{cite:t}`` roles."""
    return {k.strip() for group in CITE.findall(text) for k in group.split(",")}


def book_text() -> str:
    """The prose and code of every chapter and book page."""
    parts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "book").glob("*.md"))]
    for path in CHAPTERS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        parts += ["".join(c.get("source", "")) for c in nb.get("cells", [])]
    return "\n".join(parts)


def test_cited_keys_and_bib_keys_read_roles_and_entries():
    text = "as {cite:t}`a2019x` and {cite:p}`b2020y, c2021z` show, unlike {cite}`d2018w`"
    assert cited_keys(text) == {"a2019x", "b2020y", "c2021z", "d2018w"}
    assert bib_keys("@article{a2019x,\n title={T}}\n\n@inproceedings{b2020y,\n}") == \
        ["a2019x", "b2020y"]


def test_the_bibliography_holds_the_cited_works_and_only_those():
    keys = bib_keys(BIB.read_text(encoding="utf-8"))
    assert len(keys) == len(set(keys)), "a key is defined twice in book/references.bib"
    cited = cited_keys(book_text())
    unknown, uncited = sorted(cited - set(keys)), sorted(set(keys) - cited)
    assert not unknown, f"cited but not in references.bib: {unknown}"
    assert not uncited, f"in references.bib but cited nowhere: {uncited}"
    page = (ROOT / "book" / "bibliography.md").read_text(encoding="utf-8")
    assert ":all:" not in page, "the bibliography page must list the cited works only"


# --------------------------------------------------------------------------- chapter links

DOC_ROLE = re.compile(r"\{doc\}`(?:[^`<]*<([^>`]+)>|([^`<]+))`")


def markdown_source(path: Path) -> str:
    """The markdown cells of a notebook, joined."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    return "\n".join("".join(c.get("source", "")) for c in nb.get("cells", [])
                     if c.get("cell_type") == "markdown")


def chapter_links(text: str) -> list[str]:
    """The chapters that MyST's `{doc}` roles point to, in order: `{doc}`chapter 3
    </chapters/03_focal_loss>`` and `{doc}`/chapters/03_focal_loss`` give "03_focal_loss";
    targets outside /chapters/ are left out."""
    targets = [(titled or bare).strip() for titled, bare in DOC_ROLE.findall(text)]
    return [t.removeprefix("/chapters/") for t in targets if t.startswith("/chapters/")]


def test_chapter_links_read_titled_and_bare_doc_roles():
    text = (
        "as {doc}`chapter 3 </chapters/03_focal_loss>`'s loss and\n{doc}`/chapters/04_ghm_c`"
        " show; chapters {doc}`6\n</chapters/06_iou_balanced_sampling>`-8, not"
        " {doc}`notation </book/notation>`, {ref}`a </chapters/x>` or {cite}`a2019x`"
    )
    assert chapter_links(text) == ["03_focal_loss", "04_ghm_c", "06_iou_balanced_sampling"]
    assert chapter_links("chapter 3, {doc}`notation </book/notation>`") == []


@pytest.mark.parametrize("notebook", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_every_chapter_links_another_chapter(notebook):
    links = chapter_links(markdown_source(notebook))
    missing = [t for t in links if not (ROOT / "chapters" / f"{t}.ipynb").is_file()]
    assert not missing, (
        f"{notebook.name}: {{doc}} targets with no chapters/<name>.ipynb: "
        + ", ".join(f"/chapters/{t}" for t in missing)
    )
    assert notebook.stem not in links, f"{notebook.name} links to itself: /chapters/{notebook.stem}"
    assert links, f"{notebook.name}: its markdown has no {{doc}} link to another chapter"


# --------------------------------------------------------------------------- equations

FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*(\S*)")
CODE_DIRECTIVE = re.compile(r"\{(code|code-block|code-cell|sourcecode)\}")
# A role (kept: {eq}`label` is one) or an inline code span (dropped), whichever starts first.
ROLE_OR_CODE = re.compile(r"(\{[\w:-]+\})?(`+).*?(?<!`)\2(?!`)", re.S)
DISPLAY_MATH = re.compile(r"\$\$(.*?)\$\$(?:[ \t]*\(([^()\s]+)\))?", re.S)
EQ_ROLE = re.compile(r"\{eq\}`([^`]+)`")


def without_code(text: str) -> str:
    """Markdown without its code: fenced code blocks and inline code spans are dropped, while the
    bodies of MyST directives (```{note}) stay, since they are markdown, and so do roles."""
    kept, fences = [], []  # fences: the open ones, as (marker, holds code)
    for line in text.splitlines():
        fence = FENCE.match(line)
        in_code = bool(fences) and fences[-1][1]
        if fence:
            marker, info = fence.groups()
            closes = (bool(fences) and not info and marker[0] == fences[-1][0][0]
                      and len(marker) >= len(fences[-1][0]))
            if closes:
                fences.pop()
            elif not in_code:
                code = not info.startswith("{") or bool(CODE_DIRECTIVE.match(info))
                fences.append((marker, code))
            continue
        if not in_code:
            kept.append(line)
    return ROLE_OR_CODE.sub(lambda m: m.group(0) if m.group(1) else "", "\n".join(kept))


def display_equations(text: str) -> list[tuple[str, str | None]]:
    """(first characters, label or None) of each `$$ ... $$` block of markdown, outside code;
    MyST labels a block by ` (label)` after its closing `$$`."""
    return [(" ".join(body.split())[:40].rstrip(), label or None)
            for body, label in DISPLAY_MATH.findall(without_code(text))]


def equation_problems(chapters: dict[str, str], pages: dict[str, str] | None = None) -> list[str]:
    """What keeps the book's display equations from being labelled, uniquely, and referenced:
    `chapters` and `pages` map a name to its markdown; every equation of a chapter must carry a
    label, a page's equations may go without. Labels are global, so uniqueness and {eq}
    references are checked across both."""
    problems, labels, referenced = [], {}, set()
    for name, text in {**(pages or {}), **chapters}.items():
        referenced |= set(EQ_ROLE.findall(without_code(text)))
        for start, label in display_equations(text):
            if label is None:
                if name in chapters:
                    problems.append(f"{name}: unlabelled equation $$ {start}")
            elif label in labels:
                problems.append(
                    f"{name}: label ({label}) of $$ {start} is also used in {labels[label][0]}"
                )
            else:
                labels[label] = (name, start)
    problems += [f"{name}: ({label}) $$ {start} is never referenced with {{eq}}`{label}`"
                 for label, (name, start) in labels.items() if label not in referenced]
    problems += [f"{{eq}}`{label}` refers to no equation"
                 for label in sorted(referenced - set(labels))]
    return problems


def test_equation_problems_find_unlabelled_and_unreferenced_equations():
    text = (
        "As {eq}`loss` shows, and {eq}`grad`,\n\n$$\nL = -\\log p\n$$ (loss)\n\n"
        "$$ g = p - y $$\n\n$$\nw = 1\n$$ (weight)\n\n"
        "```python\nprint('$$ x $$')\n```\n\nwith `$$ y $$` in code, and\n\n"
        "```{note}\nsee {eq}`loss` and $$ z $$ (zed), `$$` again\n```\n\n"
        "{eq}`zed`, then `` a`$$`b ``\n"
    )
    assert display_equations(text) == [
        ("L = -\\log p", "loss"), ("g = p - y", None), ("w = 1", "weight"), ("z", "zed")
    ]
    assert equation_problems({"synthetic": text}) == [
        "synthetic: unlabelled equation $$ g = p - y",
        "synthetic: (weight) $$ w = 1 is never referenced with {eq}`weight`",
        "{eq}`grad` refers to no equation",
    ]
    other = "$$\nL = 1\n$$ (loss)\n\n$$\nh = 0\n$$\n\n{eq}`weight`, {eq}`grad`"
    assert equation_problems({"synthetic": text}, {"page": other}) == [
        "synthetic: label (loss) of $$ L = -\\log p is also used in page",
        "synthetic: unlabelled equation $$ g = p - y",
        "{eq}`grad` refers to no equation",
    ]


def test_every_display_equation_is_labelled_and_referenced():
    chapters = {path.name: markdown_source(path) for path in CHAPTERS}
    pages = {path.name: path.read_text(encoding="utf-8")
             for path in sorted((ROOT / "book").glob("*.md"))}
    problems = equation_problems(chapters, pages)
    assert not problems, (
        "every display equation of a chapter needs a book-unique label, `$$ (label)`, and a "
        "{eq}`label` reference:\n" + "\n".join(problems)
    )


# --------------------------------------------------------------------------- toc


def test_toc_entries_exist_and_cover_every_chapter():
    entries = toc_files(yaml.safe_load(TOC.read_text(encoding="utf-8")))
    assert "book/index" in entries and "book/bibliography" in entries, entries
    missing = [e for e in entries if toc_path(e) is None]
    assert not missing, f"toc entries with no file: {missing}"
    listed = {toc_path(e).resolve() for e in entries}
    orphans = [p.relative_to(ROOT).as_posix() for p in CHAPTERS if p.resolve() not in listed]
    assert not orphans, f"chapters missing from book/_toc.yml: {orphans}"
