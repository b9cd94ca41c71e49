"""Release gates, run by `make test` (and alone by `make gates`): ruff, mypy, bandit and
pip-audit against the offline advisory database. import-linter is tests/test_architecture.py;
the compose file's schema and the Caddyfile are tests/test_deploy.py."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import requests
from packaging.version import Version

from tests.review_summary import record

pytestmark = pytest.mark.gates
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Our code, as bandit scans it; tests are not shipped.
BANDIT_PATHS = ["config", "trials", "participants", "scheduler", "seeds", "deploy"]


def _audit_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "audit_dependencies", ROOT / "deploy" / "audit_dependencies.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


audit_dependencies = _audit_module()


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )


def test_ruff_finds_nothing_to_lint_or_reformat() -> None:
    lint = _run(str(BIN / "ruff"), "check", "--no-cache", ".")
    formatting = _run(str(BIN / "ruff"), "format", "--no-cache", "--check", ".")

    assert (lint.returncode, lint.stdout.strip()) == (0, "All checks passed!")
    assert (formatting.returncode, formatting.stderr) == (0, "")


def test_mypy_finds_no_type_error() -> None:
    result = _run(sys.executable, "-m", "mypy", ".")

    assert (result.returncode, result.stdout.split(" in ")[0]) == (
        0,
        "Success: no issues found",
    ), result.stdout[-3000:]


def bandit_findings(*paths: str) -> list[str]:
    result = _run(str(BIN / "bandit"), "-c", "pyproject.toml", "-r", *paths, "-f", "json", "-q")
    report = json.loads(result.stdout)
    assert report["errors"] == []
    return [
        f"{r['filename']}:{r['line_number']}: {r['test_id']} {r['issue_severity']} "
        f"{r['issue_text']}"
        for r in report["results"]
    ]


def test_bandit_finds_nothing_in_our_code() -> None:
    findings = bandit_findings(*BANDIT_PATHS)
    record("bandit findings", len(findings))

    assert findings == []


def test_bandit_reports_what_it_should(tmp_path: Path) -> None:
    # The gate above passes by finding nothing; this shows the same call finds a real one.
    unsafe = tmp_path / "unsafe.py"
    unsafe.write_text(
        "import subprocess\n"
        "from django.utils.safestring import mark_safe\n\n\n"
        "def page(name: str) -> str:\n"
        "    subprocess.run(f'echo {name}', shell=True)\n"
        "    return mark_safe(f'<b>{name}</b>')\n",
        encoding="utf-8",
    )

    findings = bandit_findings(str(unsafe))

    assert [finding.split(": ", 1)[1].split(" ", 2)[:2] for finding in findings] == [
        ["B404", "LOW"],
        ["B602", "HIGH"],
        ["B703", "MEDIUM"],
        ["B308", "MEDIUM"],
    ]


def test_nothing_runs_python_with_asserts_stripped() -> None:
    # Why bandit may skip B101: the asserts in our code run wherever the code runs.
    places = ["Dockerfile", "docker-compose.yml", "Procfile.dev", "Makefile", ".ci/run"]
    texts = {place: (ROOT / place).read_text(encoding="utf-8") for place in places}

    assert [p for p, text in texts.items() if "PYTHONOPTIMIZE" in text or "python -O" in text] == []


# --- pip-audit against the offline advisory database ---


@pytest.fixture
def advisories() -> Path:
    """The advisory database, read from ADVISORY_DB_GIT (`.ci/run` sets it) when needed.
    Without one nothing can be called free of known vulnerabilities: CI fails, a laptop skips."""
    try:
        return audit_dependencies.ensure_database()
    except audit_dependencies.NoAdvisoryDatabase as missing:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{missing} (CI=true: the dependency audit must run)")
        pytest.skip(str(missing))


def test_every_pinned_dependency_is_free_of_known_vulnerabilities(advisories: Path) -> None:
    findings = audit_dependencies.audit(ROOT / "constraints.txt")
    record("vulnerable dependencies", len(findings))

    assert findings == []


def test_the_dependency_audit_fails_on_a_known_vulnerable_release(
    tmp_path: Path, advisories: Path
) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("Django==3.2.0\nPyYAML==5.3\n", encoding="utf-8")

    findings = audit_dependencies.audit(requirements)
    cves = {alias for f in findings for alias in f.aliases if alias.startswith("CVE-")}
    run = _run(sys.executable, "deploy/audit_dependencies.py", "-r", str(requirements))

    assert {(f.package, f.version) for f in findings} == {("django", "3.2.0"), ("pyyaml", "5.3")}
    # Django's own advisories for 3.2.x (djangoproject.com/weblog), and PyYAML's full_load RCE.
    assert {
        "CVE-2021-31542",  # 3.2.1: path traversal in MultiPartParser
        "CVE-2021-33203",  # 3.2.4: admindocs directory traversal
        "CVE-2022-28346",  # 3.2.13: SQL injection in QuerySet.annotate()
        "CVE-2023-36053",  # 3.2.20: ReDoS in EmailValidator/URLValidator
        "CVE-2020-14343",  # PyYAML 5.4: arbitrary code execution in full_load
    } <= cves
    assert run.returncode == 1
    assert run.stdout.splitlines()[-1] == f"{len(findings)} known vulnerabilities"


def test_the_offline_endpoint_answers_like_osv(tmp_path: Path, advisories: Path) -> None:
    with audit_dependencies.osv_endpoint() as url:
        old = requests.post(
            url, json={"package": {"name": "Django", "ecosystem": "PyPI"}, "version": "3.2.0"}
        )
        fixed = requests.post(
            url, json={"package": {"name": "django", "ecosystem": "PyPI"}, "version": "3.2.1"}
        )
        unknown = requests.post(
            url, json={"package": {"name": "no-such-package", "ecosystem": "PyPI"}, "version": "1"}
        )

    old_ids = {vuln["id"] for vuln in old.json()["vulns"]}
    fixed_ids = {vuln["id"] for vuln in fixed.json()["vulns"]}
    assert "PYSEC-2021-7" in old_ids  # CVE-2021-31542, fixed in 3.2.1
    assert "PYSEC-2021-7" not in fixed_ids
    assert "PYSEC-2021-98" in fixed_ids  # CVE-2021-33203, fixed only in 3.2.4
    assert fixed_ids < old_ids
    assert (unknown.status_code, unknown.json()) == (200, {})


@pytest.mark.parametrize(
    ("events", "version", "affected"),
    [
        ([{"introduced": "0"}, {"fixed": "3.2.1"}], "3.2.0", True),
        ([{"introduced": "0"}, {"fixed": "3.2.1"}], "3.2.1", False),
        ([{"introduced": "4.0"}, {"fixed": "4.0.4"}], "3.2.0", False),
        ([{"introduced": "4.0"}, {"last_affected": "4.0.4"}], "4.0.4", True),
        ([{"introduced": "4.0"}, {"last_affected": "4.0.4"}], "4.0.5", False),
        # Two ranges in one list, out of order: evaluated in version order, as OSV does.
        (
            [{"fixed": "4.2.1"}, {"introduced": "4.2"}, {"introduced": "0"}, {"fixed": "3.2.9"}],
            "4.0",
            False,
        ),
        (
            [{"fixed": "4.2.1"}, {"introduced": "4.2"}, {"introduced": "0"}, {"fixed": "3.2.9"}],
            "4.2.0",
            True,
        ),
    ],
)
def test_osv_range_evaluation(events: list[dict[str, str]], version: str, affected: bool) -> None:
    advisory = {
        "affected": [
            {
                "package": {"name": "Django", "ecosystem": "PyPI"},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
            }
        ]
    }

    assert audit_dependencies.affects(advisory, "django", Version(version)) is affected


def test_the_advisory_database_snapshot_says_where_and_when_it_is_from(advisories: Path) -> None:
    snapshot = audit_dependencies.snapshot()
    taken = dt.datetime.fromisoformat(snapshot["committed_at"])
    record("advisory database age in days", (dt.datetime.now(dt.UTC) - taken).days)

    assert snapshot["source"] == "https://github.com/pypa/advisory-database"
    assert len(snapshot["commit"]) == 40
    # All of PyPI's advisories, not only today's pins: a new dependency is audited too.
    assert snapshot["packages"] > 600
