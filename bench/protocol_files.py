"""How long checking a protocol file takes, and what a hostile one costs.

    .venv/bin/python bench/protocol_files.py [--repeat 3]

No database: `parse_protocol` (what an import does before it writes anything) and, for the
deep chain, the pure engine's `plan` of one participant on the parsed document. Prints, for
each row, the median of --repeat runs in seconds, the peak of Python memory allocated meanwhile
(tracemalloc) and the outcome (accepted, planned, or the first line of the refusal):
- 10,000 visits in 40 chains of 250 (each visit anchored to the one before, each chain to an
  anchor of its own): accepted, and every check (anchors, cycles, chain depths, window
  overlaps) runs over all of them;
- one chain of 10,000 visits (9,999 deep, 3 days apart so the last is 30,000 days out, within
  MAX_SPAN_DAYS), listed in order and backwards: accepted;
- the backwards chain checked AND planned (one participant's 10,000 visits), and planned alone
  (the snapshot built once): the planner orders visits topologically, without recursion;
- the "billion laughs" alias bomb (10^9 strings once expanded): refused at its first anchor;
- a file of MAX_FILE_BYTES of one 4 MB description: refused at the text limit.
The acceptance: the 10,000-visit files checked (and planned) under 5 s, the alias bomb under
1 s and 100 MB; each row is reported to `make bench` with its target (seconds, and the alias
bomb's peak memory in MB).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import report  # noqa: E402

LARGE_FILE_SECONDS = 5.0  # a 10,000-visit file checked (and planned)
BOMB_SECONDS = 1.0  # the alias bomb refused
BOMB_MB = 100.0

HEAD = """\
format: 1
trial: {code: bench, title: Bench trial, phase: "2", sponsor: Bench sponsor, blinding: open}
version: {label: "1"}
anchors:
  - {code: day1, name: Day 1}
epochs:
  - {code: TRT, name: Treatment}
visits:
"""


def visit_line(code: str, anchor: str, offset: int) -> str:
    return (
        f"  - {{code: {code}, name: Visit {code}, epoch: TRT, anchor: {anchor}, "
        f"offset_days: {offset}, window: {{before: 1, after: 1}}, duration_minutes: 30}}\n"
    )


def chains(count: int, length: int) -> str:
    """`count` chains of `length` visits, each chain counted from an anchor of its own (a
    participant anchor per chain), each visit 7 days after the one before it."""
    anchors = "".join(f"  - {{code: a{c}, name: Anchor {c}}}\n" for c in range(count))
    head = HEAD.replace("  - {code: day1, name: Day 1}\n", anchors)
    lines = []
    for c in range(count):
        for step in range(length):
            anchor = f"a{c}" if step == 0 else f"{{visit: C{c}V{step - 1}}}"
            lines.append(visit_line(f"C{c}V{step}", anchor, 0 if step == 0 else 7))
    return head + "".join(lines)


def chain(length: int, *, backwards: bool = False, every: int = 3) -> str:
    lines = [
        visit_line(f"V{i}", "day1" if i == 0 else f"{{visit: V{i - 1}}}", every)
        for i in range(length)
    ]
    if backwards:
        lines.reverse()
    return HEAD + "".join(lines)


def alias_bomb() -> str:
    lines = ['lol0: &l0 "lol"']
    lines += [f"lol{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, 10)]
    return "\n".join(lines) + "\n" + HEAD + visit_line("V1", "day1", 0)


def huge_text(limit: int) -> str:
    body = HEAD + visit_line("V1", "day1", 0) + "arms:\n  - {code: A, name: A, description: '"
    return body + "x" * (limit - len(body) - 4) + "'}\n"


def measure(text: str, parse: Callable[[str], str], repeat: int) -> tuple[float, float, str]:
    """Median time of `repeat` runs, then one more run under tracemalloc for the peak of Python
    memory (tracemalloc slows Python down many times, so it is never timed)."""
    from trials.protocol_file import ProtocolFileError

    def outcome_of() -> str:
        try:
            return parse(text)
        except ProtocolFileError as exc:
            return "refused: " + str(exc).splitlines()[0][:150]

    times = []
    outcome = ""
    for _ in range(repeat):
        started = time.perf_counter()
        outcome = outcome_of()
        times.append(time.perf_counter() - started)
    tracemalloc.start()
    outcome_of()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times), peak / 1e6, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

    import datetime as dt

    from scheduler.engine import ParticipantFacts, plan
    from scheduler.snapshot import snapshot_from_document
    from trials.protocol_file import MAX_FILE_BYTES, parse_protocol

    facts = ParticipantFacts(anchors={"day1": dt.date(2026, 1, 5)})

    def check(text: str) -> str:
        parse_protocol(text, source="bench.yaml")
        return "accepted"

    def planned(calendar: Any) -> str:
        last = calendar.visits[-1]
        return (
            f"planned {len(calendar.visits):,} visits, the last {last.visit_code} on {last.target}"
        )

    def check_and_plan(text: str) -> str:
        return planned(
            plan(snapshot_from_document(parse_protocol(text, source="bench.yaml")), facts)
        )

    backwards = chain(10_000, backwards=True)
    snapshot = snapshot_from_document(parse_protocol(backwards, source="bench.yaml"))

    rows: dict[str, tuple[str, Callable[[str], str]]] = {
        "10,000 visits, 40 chains of 250": (chains(40, 250), check),
        "10,000 visits, one chain": (chain(10_000), check),
        "10,000 visits, one chain listed backwards": (backwards, check),
        "  the same, checked and planned": (backwards, check_and_plan),
        "  the same, planned only": (backwards, lambda _text: planned(plan(snapshot, facts))),
        "alias bomb (billion laughs)": (alias_bomb(), check),
        "4 MB description": (huge_text(MAX_FILE_BYTES), check),
    }
    print(f"{'file':<44} {'bytes':>10} {'seconds':>8} {'peak MB':>8}  outcome")
    for name, (text, run) in rows.items():
        seconds, megabytes, outcome = measure(text, run, args.repeat)
        print(f"{name:<44} {len(text):>10,} {seconds:>8.3f} {megabytes:>8.1f}  {outcome}")
        bomb = name.startswith("alias bomb")
        scenario = name.replace("  the same, ", "10,000 visits, one chain backwards, ")
        target = BOMB_SECONDS if bomb else LARGE_FILE_SECONDS if "10,000" in scenario else None
        common = {"script": "protocol_files", "runs": args.repeat}
        report(scenario=scenario, value=seconds, unit="s", target=target, **common)
        if bomb:
            report(
                scenario=f"{scenario}: peak memory",
                value=megabytes,
                unit="MB",
                target=BOMB_MB,
                **common,
            )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak resident memory: {rss:.0f} MB")


if __name__ == "__main__":
    main()
