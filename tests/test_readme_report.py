"""The README's results table is the report's, not a hand-copied variant of it (issue 6)."""

from __future__ import annotations

import pytest

from conftest import ROOT

BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"


def _table_rows(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("|")]


def test_readme_shows_the_reports_tables():
    tables = ROOT / "report" / "tables.md"
    if not tables.is_file():
        pytest.skip("report/tables.md not produced yet (`dvc repro report`)")
    readme = (ROOT / "README.md").read_text()
    assert BEGIN in readme and END in readme, f"README.md: the report's tables go between {BEGIN} and {END}"
    block = readme.split(BEGIN, 1)[1].split(END, 1)[0]
    assert _table_rows(block) == _table_rows(tables.read_text()), "README.md's table differs from report/tables.md: copy it again"
