"""The README and docs/: every relative link resolves, the README stays short, and the benchmark publisher writes its
tables between their markers wherever those live."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code removed."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, _INLINE_CODE.sub("", line)))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text without markup, lowercased, punctuation other than - and _ dropped,
    spaces turned into -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a markdown file; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else _HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every markdown link and link reference outside code."""
    found = []
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        found += [(number, m.group(1)) for m in _LINK.finditer(line)]
        m = _REFERENCE.match(line)
        if m:
            found.append((number, m.group(1)))
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with each relative link of ``path``: a target outside the repository or missing, or an anchor
    that is no heading of the markdown file it points into."""
    problems = []
    for number, target in links(path):
        if _EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path.resolve()
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not dest.is_relative_to(root.resolve()):
            problems.append(f"{where}: points outside the repository")
        elif not dest.exists():
            problems.append(f"{where}: {dest.relative_to(root.resolve())} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(root.resolve())}")
    return problems


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == []


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/ (at most {README_MAX_LINES})"


def test_docs_exist_and_the_readme_links_each() -> None:
    targets = {t.partition("#")[0] for _, t in links(ROOT / "README.md")}
    for page in pages()[1:]:
        assert f"docs/{page.name}" in targets, f"README.md does not link to docs/{page.name}"


def test_a_broken_link_or_anchor_is_caught(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Rows below 1.0, and why\n\n```\n# not a heading\n```\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#rows-below-10-and-why) [ok](#top-title) [web](https://example.com/x)\n"
        "`[in code](docs/missing.md)`\n"
        "```\n[in a block](docs/missing.md)\n```\n"
        "# Top title\n"
        "[gone](docs/missing.md) [bad anchor](docs/a.md#rows-below-1.0) [fenced](docs/a.md#not-a-heading)\n"
        "[outside](../elsewhere.md)\n"
    )
    problems = broken_links(readme, tmp_path)
    assert len(problems) == 4, problems
    assert "docs/missing.md does not exist" in problems[0]
    assert "#rows-below-1.0" in problems[1] and "#not-a-heading" in problems[2]
    assert "outside the repository" in problems[3]


@pytest.mark.parametrize(("heading", "anchor"), [
    ("## ModelCard and Predictor", "modelcard-and-predictor"),
    ("### Memory format: channels_last model by model", "memory-format-channels_last-model-by-model"),
    ("## VGG-16's fc6 as a matrix multiplication", "vgg-16s-fc6-as-a-matrix-multiplication"),
    ("## The `models` table, [linked](x.md)", "the-models-table-linked"),
])
def test_slug_follows_github(heading: str, anchor: str) -> None:
    assert slug(_HEADING.match(heading).group(2)) == anchor


def test_benchmark_markers_are_paired_and_unique() -> None:
    where: dict[str, Path] = {}
    for page in pages():
        text = page.read_text(encoding="utf-8")
        starts = re.findall(r"<!-- ([a-z0-9_]+):start -->", text)
        for name in starts:
            assert name not in where, f"markers {name} in both {where[name].name} and {page.name}"
            where[name] = page
            assert text.count(f"<!-- {name}:start -->") == 1 and text.count(f"<!-- {name}:end -->") == 1
            assert text.index(f"<!-- {name}:start -->") < text.index(f"<!-- {name}:end -->")
    for name in ("results", "models", "train_throughput", "inference_throughput", "serve_load", "gemm_conv"):
        assert name in where, f"no page holds the {name} markers"


def _publish_module():
    spec = importlib.util.spec_from_file_location("_publish", ROOT / "benchmarks" / "_publish.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_publish_writes_between_the_markers_of_readme_and_docs(tmp_path: Path) -> None:
    publish = _publish_module().publish
    (tmp_path / "docs").mkdir()
    readme = "intro\n<!-- results:start -->\nold\n<!-- results:end -->\nafter\n"
    (tmp_path / "README.md").write_text(readme)
    (tmp_path / "docs" / "benchmarks.md").write_text("# B\n<!-- speed:start -->\nold table\n<!-- speed:end -->\ntail\n")
    (tmp_path / "docs" / "models.md").write_text("# M\nno markers\n")

    written = publish("speed", "| new |\n", root=tmp_path)
    assert written == [tmp_path / "docs" / "benchmarks.md"]
    assert (tmp_path / "docs" / "benchmarks.md").read_text() == (
        "# B\n<!-- speed:start -->\n| new |\n<!-- speed:end -->\ntail\n")
    assert (tmp_path / "benchmarks" / "results" / "speed.md").read_text() == "| new |\n"
    assert (tmp_path / "README.md").read_text() == readme
    assert (tmp_path / "docs" / "models.md").read_text() == "# M\nno markers\n"

    assert publish("results", "R\n", root=tmp_path) == [tmp_path / "README.md"]
    assert (tmp_path / "README.md").read_text() == "intro\n<!-- results:start -->\nR\n<!-- results:end -->\nafter\n"
    assert publish("nowhere", "N\n", root=tmp_path) == []
    assert (tmp_path / "benchmarks" / "results" / "nowhere.md").read_text() == "N\n"


def test_republishing_the_current_tables_changes_no_page(tmp_path: Path) -> None:
    """The docs hold each table exactly as the publisher writes it, so a rerun that measures the same numbers leaves
    the pages byte for byte as they are."""
    publish = _publish_module().publish
    (tmp_path / "docs").mkdir()
    originals = {}
    for page in pages():
        dest = tmp_path / page.relative_to(ROOT)
        originals[dest] = page.read_text(encoding="utf-8")
        dest.write_text(originals[dest], encoding="utf-8")
    for dest, text in originals.items():
        for name, body in re.findall(r"<!-- ([a-z0-9_]+):start -->\n(.*?)<!-- \1:end -->", text, re.S):
            publish(name, body, root=tmp_path)
    for dest, text in originals.items():
        assert dest.read_text(encoding="utf-8") == text, dest.name
