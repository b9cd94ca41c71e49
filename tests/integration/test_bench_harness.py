"""The reminder benchmark still measures what it says, at a small size (real Postgres, Redis
and two Celery workers, as `make bench` runs it).

Its end-to-end figures wait until every reminder it made due has been sent. When delivery
started to check the calendar as it is (a reminder before a visit goes only for a booked
visit), the script's reminders of planned visits were set aside as no longer needed, and
`make bench` waited two minutes and failed, unnoticed until the next benchmark run. The
other scripts' figures rest on checks of their own that run in the suite
(tests/api/test_bench_baseline.py, the slot and feed tests); this one rests on delivery.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.integration


def test_the_reminder_benchmark_sends_every_reminder_it_makes_due(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    finished = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [
            sys.executable,
            str(ROOT / "bench" / "reminders.py"),
            "--rows",
            "2000",
            "--due",
            "50",
            "--sends",
            "60",
            "--runs",
            "1",
        ],
        cwd=ROOT,
        env={**os.environ, "BENCH_ROWS": str(rows), "VAR_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    scenarios = {json.loads(line)["scenario"] for line in rows.read_text().splitlines()}
    assert "reminders sent, batched, two workers" in scenarios
    assert "reminders sent, one row a message, two workers" in scenarios
