"""Write a benchmark's table to benchmarks/results/<name>.md and between its markers in README.md."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def publish(name: str, text: str, marker: str | None = None) -> None:
    """``text`` (ending in a newline) goes to benchmarks/results/<name>.md and replaces what README.md holds between
    ``<!-- marker:start -->`` and ``<!-- marker:end -->`` (marker defaults to name); a README without the markers
    is left alone."""
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.md").write_text(text)
    start, end = f"<!-- {marker or name}:start -->", f"<!-- {marker or name}:end -->"
    readme = ROOT / "README.md"
    body = readme.read_text()
    if start in body and end in body:
        head, rest = body.split(start, 1)
        readme.write_text(f"{head}{start}\n{text}{end}{rest.split(end, 1)[1]}")


def publish_unless_subset(name: str, text: str, subset: list[str] | None) -> None:
    """:func:`publish`, unless the run timed only ``subset`` of a benchmark's rows (its ``--rows``): a partial table
    must not replace the full one, so it stays on the screen and this says so."""
    if subset:
        print(f"--rows timed a subset: benchmarks/results/{name}.md and the README keep the full table.")
    else:
        publish(name, text)


def rows_flag(subset: list[str] | None) -> str:
    """The ``--rows`` part of a table's Command line: ' --rows "A" "B"', or "" for every row."""
    return " --rows " + " ".join(f'"{r}"' for r in subset) if subset else ""
