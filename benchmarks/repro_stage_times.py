"""Each stage's wall time in a `make repro` / `dvc repro` log whose lines carry the time they
were written (HH:MM:SS first), and the sum.

    make repro 2>&1 | while IFS= read -r l; do printf '%s %s\\n' "$(date -u +%T)" "$l"; done > repro.log
    python benchmarks/repro_stage_times.py repro.log [--out results/repro.json]

A stage's time runs from its "Running stage" line to the next stage's, or to the line that ends
the run ("== make repro: exit ..." of ../shared/tools/fresh-clone-check, or the last line). A
repro cut short (a killed machine or session) and started again in the same folder appends a
line beginning "== resumed" to the same log: the stage that was running when it was cut is
listed under `cut_short` (from its start to the restart, the pause between them included),
not among the stages, and DVC reruns it (from its last checkpoint where the stage resumes, e.g.
the training stages). A log that has not ended lists its last stage under `running` (its time
so far). Stages DVC skipped as unchanged take no time. Midnight is crossed forwards.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

LINE = re.compile(r"(\d\d):(\d\d):(\d\d) (.*)")
STAGE = re.compile(r"Running stage '([^']+)'")


def events(lines: list[str]) -> list[tuple[int, str, str]]:
    """(seconds since the day of the first line, kind, stage) of every stage start ('stage'),
    restart ('resume') and end ('end') in the log; the last timed line closes the run ('last')."""
    out, day, prev, last = [], 0, None, None
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        t = int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3])
        if prev is not None and t < prev - 12 * 3600:
            day += 86400
        prev, t = t, t + day
        last = t
        rest = m[4]
        if s := STAGE.match(rest):
            out.append((t, "stage", s[1]))
        elif rest.startswith("== resumed"):
            out.append((t, "resume", ""))
        elif re.match(r"== make \w+( \(resumed\))?: exit", rest):
            out.append((t, "end", rest))
    if last is not None and (not out or out[-1][1] != "end"):
        out.append((last, "last", ""))
    return out


def stage_times(lines: list[str]) -> dict:
    found = events(lines)
    stages: dict[str, int] = {}
    cut: dict[str, int] = {}
    running: dict[str, int] = {}
    for (t, kind, name), (t2, kind2, _) in zip(found, found[1:]):
        if kind == "stage":
            (cut if kind2 == "resume" else running if kind2 == "last" else stages)[name] = t2 - t
    return {"stage_seconds": stages, "sum_stage_seconds": sum(stages.values()), "cut_short": cut,
            "running": running, "ended": next((e[2] for e in found if e[1] == "end"), None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = stage_times(args.log.read_text(errors="replace").splitlines())
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
