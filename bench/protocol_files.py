"""How long checking a protocol file takes, and what a hostile one costs.

    .venv/bin/python bench/protocol_files.py [--repeat 3]

No database: `parse_protocol` only (what an import does before it writes anything). Prints,
for each file, the best of --repeat runs in seconds, the peak of Python memory allocated while
checking it (tracemalloc) and the outcome (accepted, or the first line of the refusal):
- 10,000 visits in 40 chains of 250 (each visit anchored to the one before, each chain to an
  anchor of its own): accepted, and every check (anchors, cycles, chain depths, window
  overlaps) runs over all of them;
- one chain 10,000 deep: refused at the first visit past MAX_ANCHOR_CHAIN;
- 1,200 deep listed backwards: refused the same way (it used to recurse until RecursionError);
- the "billion laughs" alias bomb (10^9 strings once expanded): refused at its first anchor;
- a file of MAX_FILE_BYTES of one 4 MB description: refused at the text limit.
The acceptance: the 10,000-visit files under 5 s, the alias bomb under 1 s and 100 MB.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def chain(length: int, *, backwards: bool = False) -> str:
    lines = [
        visit_line(f"V{i}", "day1" if i == 0 else f"{{visit: V{i - 1}}}", 7) for i in range(length)
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


def measure(text: str, parse: Callable[[str], object], repeat: int) -> tuple[float, float, str]:
    """Best time of `repeat` runs, then one more run under tracemalloc for the peak of Python
    memory (tracemalloc slows Python down many times, so it is never timed)."""
    from trials.protocol_file import ProtocolFileError

    def outcome_of() -> str:
        try:
            parse(text)
        except ProtocolFileError as exc:
            return "refused: " + str(exc).splitlines()[0][:150]
        return "accepted"

    best = float("inf")
    outcome = ""
    for _ in range(repeat):
        started = time.perf_counter()
        outcome = outcome_of()
        best = min(best, time.perf_counter() - started)
    tracemalloc.start()
    outcome_of()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return best, peak / 1e6, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

    from trials.protocol_file import MAX_ANCHOR_CHAIN, MAX_FILE_BYTES, parse_protocol

    def parse(text: str) -> object:
        return parse_protocol(text, source="bench.yaml")

    files = {
        f"10,000 visits, 40 chains of {MAX_ANCHOR_CHAIN}": chains(40, MAX_ANCHOR_CHAIN),
        "10,000 visits, one chain": chain(10_000),
        "1,200 visits, one chain listed backwards": chain(1_200, backwards=True),
        "alias bomb (billion laughs)": alias_bomb(),
        "4 MB description": huge_text(MAX_FILE_BYTES),
    }
    print(f"{'file':<44} {'bytes':>10} {'seconds':>8} {'peak MB':>8}  outcome")
    for name, text in files.items():
        seconds, megabytes, outcome = measure(text, parse, args.repeat)
        print(f"{name:<44} {len(text):>10,} {seconds:>8.3f} {megabytes:>8.1f}  {outcome}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak resident memory: {rss:.0f} MB")


if __name__ == "__main__":
    main()
