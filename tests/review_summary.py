"""The figures a hospital's review asks `make test` to print, gathered while the suite runs.

A test that tries bad inputs, counts 5xx responses or runs a release gate (bandit, pip-audit,
`check --deploy`) calls `record(line, n)`; at the end the terminal summary prints one line per
figure, summed over the whole run (over every worker too, when the suite runs in parallel with
pytest-xdist: each worker hands its figures to the controller).

    from tests.review_summary import record
    record("bad protocol files tried", 1); record("bad protocol files refused", 1)

Only what a test measured is printed: a figure no test recorded does not appear as 0.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

_figures: Counter[str] = Counter()
_KEY = "review_summary"


def record(line: str, n: int = 1) -> None:
    """Add `n` to the figure `line` ("5xx responses", "bandit findings", …)."""
    _figures[line] += n


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the figures to the controller
        workeroutput[_KEY] = json.dumps(dict(_figures))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    output = getattr(node, "workeroutput", None) or {}
    for line, n in json.loads(output.get(_KEY, "{}")).items():
        _figures[line] += n


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if getattr(terminalreporter.config, "workeroutput", None) is not None or not _figures:
        return
    terminalreporter.section("what a review asks for")
    width = max(len(line) for line in _figures)
    for line in sorted(_figures):
        terminalreporter.write_line(f"{line:<{width}}  {_figures[line]:>8,}")
