"""Run the interruption, concurrency and load tests and write their outcomes into docs/reliability.md.

    python bench/reliability.py              # every test once, the torchrun-under-load test 3 times
    python bench/reliability.py --repeat 10  # the load test 10 times

The figures are the tests themselves (pass or fail, and seconds each took), with the machine and its load
average, because a race shows only under load.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "reliability.md"
START, END = "<!-- interruptions: start -->", "<!-- interruptions: end -->"
TESTS = {
    "tests/test_train.py::test_two_processes_with_torchrun_gloo_under_load":
        "2 gloo processes, a checkpoint every step, a CPU-bound helper on every core",
    "tests/test_train.py::test_sigkill_then_resume_gives_the_uninterrupted_weights":
        "`hico train` SIGKILL after checkpoint-3 / while writing checkpoint-6, then resume: final weights equal",
    "tests/test_niah.py::test_interrupted_runs_resume_every_case_exactly_once":
        "`hico niah run` SIGINT, then SIGKILL with half a line written, then rerun: every case once, valid JSONL",
    "tests/test_memory.py::test_two_processes_encoding_one_video_into_one_cache":
        "2 processes encode one video into one cache at once: identical tokens, one valid entry",
    "tests/test_memory.py::test_a_damaged_cache_entry_is_warned_about_and_re_encoded":
        "truncated / corrupted / foreign cache entry: warned, re-encoded, healed",
}


def run_tests(repeat: int) -> list[tuple[str, str, float]]:
    """(test id, outcome, seconds) of every test run."""
    rows = []
    for round_ in range(repeat):
        selected = list(TESTS) if round_ == 0 else [next(iter(TESTS))]  # repeat only the load test
        with tempfile.TemporaryDirectory() as folder:
            report = Path(folder) / "junit.xml"
            command = [sys.executable, "-m", "pytest", "-q", "-m", "", "-p", "no:cacheprovider",
                       f"--junitxml={report}", *selected]
            print(f"round {round_ + 1}/{repeat}: {' '.join(command[3:])}", flush=True)
            subprocess.run(command, cwd=ROOT)
            for case in ElementTree.parse(report).getroot().iter("testcase"):
                outcome = "failed" if case.find("failure") is not None or case.find("error") is not None else \
                    "skipped" if case.find("skipped") is not None else "passed"
                rows.append((f"{case.get('classname')}::{case.get('name')}", outcome, float(case.get("time", 0))))
    return rows


def render(rows: list[tuple[str, str, float]], repeat: int, load: tuple[float, float, float], command: str) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    lines = [
        "## Interruptions, concurrency and load: measured",
        "",
        f"Command: `{command}`. Machine: {machine}, shared with other jobs (load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the start). Date: {time.strftime('%Y-%m-%d')}.",
        "",
        "| test | what it does | runs | passed | seconds each |",
        "|---|---|---|---|---|",
    ]
    for prefix, what in TESTS.items():
        module, name = prefix.split("::")
        mine = [r for r in rows if r[0].split("::")[-1].split("[")[0] == name]
        for variant in sorted({r[0].split("::")[-1] for r in mine}):
            runs = [r for r in mine if r[0].split("::")[-1] == variant]
            seconds = ", ".join(f"{r[2]:.0f}" for r in runs)
            lines.append(f"| `{module}::{variant}` | {what} | {len(runs)} | "
                         f"{sum(r[1] == 'passed' for r in runs)} | {seconds} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the torchrun-under-load test")
    args = parser.parse_args()
    load = os.getloadavg()
    rows = run_tests(args.repeat)
    command = "python bench/reliability.py" + (f" --repeat {args.repeat}" if args.repeat != 3 else "")
    section = render(rows, args.repeat, load, command)
    print(section)
    text = DOCS.read_text()
    before, rest = text.split(START)
    _, after = rest.split(END)
    DOCS.write_text(f"{before}{START}\n{section}\n{END}{after}")
    failed = [r for r in rows if r[1] != "passed"]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
