"""docs/results.md copies its tables from the committed reports: every row with a confidence
interval must equal, cell for cell, a row of some docs/results/study/<study>/summary.md (the
label may be reworded; the numbers may not)."""

from conftest import ROOT


def table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("|") and not set(line) <= set("|:- "):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_every_interval_row_of_results_md_is_a_row_of_a_committed_summary():
    summaries = sorted((ROOT / "docs" / "results" / "study").glob("*/summary.md"))
    assert summaries, "no committed study reports under docs/results/study"
    published = {tuple(row[1:]) for path in summaries for row in table_rows(path.read_text())}
    doc_rows = [row for row in table_rows((ROOT / "docs" / "results.md").read_text())
                if any("[" in cell for cell in row[1:])]
    assert len(doc_rows) > 20
    typed = [row[0] for row in doc_rows if tuple(row[1:]) not in published]
    assert not typed, f"docs/results.md rows not found in any committed summary.md: {typed}"
