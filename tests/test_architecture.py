"""The dependency rules of ../shared/DESIGN.md hold (import-linter contracts in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gates
ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept() -> None:
    # In a subprocess: import-linter builds its own import graph and must not see this test
    # run's already-imported modules or its settings overrides.
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "Contracts: 8 kept, 0 broken."
