"""Write a benchmark's table to benchmarks/results/<name>.md and between its markers in the docs.

The tables live in docs/benchmarks.md, except the models table (docs/models.md) and the headline results
(README.md); :func:`publish` looks for a table's markers in README.md and every docs/*.md, so a table moved from one
page to another needs no change here."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def marked_pages(root: Path = ROOT) -> list[Path]:
    """The pages that may hold tables between markers: README.md and docs/*.md (those that exist), in that order."""
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return [p for p in pages if p.is_file()]


def publish(name: str, text: str, marker: str | None = None, root: Path = ROOT) -> list[Path]:
    """``text`` (ending in a newline) goes to benchmarks/results/<name>.md and replaces what each page of
    :func:`marked_pages` holds between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` (marker defaults to
    name); a page without the markers is left alone. Returns the pages that were rewritten; when none holds the
    markers the results file alone is written, and this says so."""
    results = root / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.md").write_text(text)
    start, end = f"<!-- {marker or name}:start -->", f"<!-- {marker or name}:end -->"
    written = []
    for page in marked_pages(root):
        body = page.read_text()
        if start in body and end in body:
            head, rest = body.split(start, 1)
            page.write_text(f"{head}{start}\n{text}{end}{rest.split(end, 1)[1]}")
            written.append(page)
    if not written:
        print(f"no page holds {start}: only benchmarks/results/{name}.md was written.")
    return written


def publish_unless_subset(name: str, text: str, subset: list[str] | None) -> None:
    """:func:`publish`, unless the run timed only ``subset`` of a benchmark's rows (its ``--rows``): a partial table
    must not replace the full one, so it stays on the screen and this says so."""
    if subset:
        print(f"--rows timed a subset: benchmarks/results/{name}.md and docs/benchmarks.md keep the full table.")
    else:
        publish(name, text)


def rows_flag(subset: list[str] | None) -> str:
    """The ``--rows`` part of a table's Command line: ' --rows "A" "B"', or "" for every row."""
    return " --rows " + " ".join(f'"{r}"' for r in subset) if subset else ""
