"""The commands the README and docs/ show are real (issue 30): every `make TARGET` is a target of
the Makefile (`make -n TARGET` exits 0) and every `eve-fdd SUB` a subcommand (`--help` exits 0)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from eve_fdd.cli import main

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SEPARATORS = re.compile(r"&&|\|\||[;|()]")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def code_snippets(text: str) -> list[str]:
    """Every line of a fenced code block and every inline code span (which may wrap)."""
    snippets, prose, in_block = [], [], False

    def spans():
        snippets.extend(" ".join(span.split()) for span in re.findall(r"`([^`]+)`", "\n".join(prose)))
        prose.clear()

    for line in text.splitlines():
        if line.strip().startswith("```"):
            if not in_block:
                spans()
            in_block = not in_block
        elif in_block:
            snippets.append(line)
        else:
            prose.append(line)
    spans()
    return snippets


def words(command: str) -> list[str]:
    try:
        return shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote in an inline fragment
        return command.split("#", 1)[0].split()


def shown_commands(text: str) -> tuple[set[str], set[tuple[str, ...]]]:
    """The make targets and the eve-fdd subcommands (with a nested one: `human-eval export`) that
    `text` runs: a command is `make` or `eve-fdd` at the start of a shell command, after any
    VAR=value assignments, so `--instruction "make the background blue"` is no make target."""
    targets, subcommands = set(), set()
    for snippet in code_snippets(text):
        for command in SEPARATORS.split(snippet):
            argv = words(command)
            while argv and ASSIGNMENT.match(argv[0]):
                argv = argv[1:]
            if not argv:
                continue
            rest = [a for a in argv[1:] if a != "\\"]
            if argv[0] == "make":
                targets |= {a for a in rest if not a.startswith("-") and "=" not in a}
            elif Path(argv[0]).name == "eve-fdd" and rest and not rest[0].startswith("-"):
                sub = (rest[0],)
                if rest[0] == "human-eval" and len(rest) > 1 and not rest[1].startswith("-"):
                    sub += (rest[1],)
                subcommands.add(sub)
    return targets, subcommands


def shown() -> tuple[dict[str, str], dict[tuple[str, ...], str]]:
    """Each target and subcommand, with the first page that shows it."""
    targets, subcommands = {}, {}
    for page in PAGES:
        t, s = shown_commands(page.read_text())
        for target in t:
            targets.setdefault(target, page.name)
        for sub in s:
            subcommands.setdefault(sub, page.name)
    return targets, subcommands


def test_the_parser_finds_commands_and_only_commands():
    text = """
```bash
make repro   # creates .venv
TEST_WORKERS=0 make test
eve-fdd edit in.mp4 --instruction "make the background blue" \\
    -o out.mp4
```
`make ui`, `eve-fdd human-eval export --against full -o human_eval/`, `eve-fdd human-eval`,
`PATH=x make -n serve && make test-services`, `--param 'params={"fdd.iterations": 300}'`, make believe,
a span that wraps: `TEST_WORKERS=0 make
setup`, and none that pairs prose: make the edits
"""
    assert shown_commands(text) == ({"repro", "test", "ui", "serve", "test-services", "setup"},
                                    {("edit",), ("human-eval", "export"), ("human-eval",)})


def test_readme_shows_the_two_commands():
    targets, subcommands = shown_commands((ROOT / "README.md").read_text())
    assert {"repro", "test"} <= set(targets), targets
    assert ("edit",) in subcommands, subcommands


def test_every_make_target_shown_exists():
    targets, _ = shown()
    for target, page in sorted(targets.items()):
        proc = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0, f"{page} shows `make {target}`, but `make -n {target}` fails:\n{proc.stderr}"


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "eve-fdd"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "eve_fdd.cli"]


def test_every_eve_fdd_subcommand_shown_exists(capsys):
    """The console script once (it is installed and lists the subcommands), then each subcommand's
    `--help` through the same `main`, in this process (a process each would take ~1.5 s)."""
    _, subcommands = shown()
    proc = subprocess.run([*_console_script(), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    for sub, page in sorted(subcommands.items()):
        assert sub[0] in proc.stdout, f"{page} shows `eve-fdd {sub[0]}`, which `eve-fdd --help` does not list"
        with pytest.raises(SystemExit) as done:
            main([*sub, "--help"])
        out = capsys.readouterr().out
        assert done.value.code == 0 and out.startswith("usage: eve-fdd " + " ".join(sub)), \
            f"{page} shows `eve-fdd {' '.join(sub)}`, but its --help fails:\n{out}"
