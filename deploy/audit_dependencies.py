"""pip-audit against an offline copy of PyPA's advisory database.

CI and the developers' machines reach PyPI but no advisory service: osv.dev does not resolve,
and PyPI's per-release JSON (where pip-audit's default service reads vulnerabilities) is not
served, so a plain `pip-audit` "finds no known vulnerabilities" because it audited nothing.
Here pip-audit itself does the auditing, unchanged, through its OSV service; the OSV query
endpoint it talks to is this module, on 127.0.0.1, answering from PyPA's advisory-database
(the source of PyPI's own vulnerability data), every package's.

The advisories are not in this repository: they are read from a copy of
github.com/pypa/advisory-database (a clone or a bare git directory) named by ADVISORY_DB_GIT,
into var/advisories/ (generated, not in git) the first time they are needed. `.ci/run` points
ADVISORY_DB_GIT at the machine's copy; without one the audit says so and refuses to pass.

    python deploy/audit_dependencies.py                  # constraints.txt; exit 1 on findings
    python deploy/audit_dependencies.py -r other.txt     # another pinned requirements file
    python deploy/audit_dependencies.py --refresh CLONE  # re-read the advisories from a copy
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import gzip
import io
import json
import os
import shutil
import subprocess  # nosec B404  # fixed argument lists, never a shell
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
ADVISORIES = ROOT / "var" / "advisories"
DATABASE = "pypi-advisories.json.gz"
CONSTRAINTS = ROOT / "constraints.txt"
# The fields pip-audit reads, and enough to judge an advisory by.
KEPT_FIELDS = ("id", "aliases", "summary", "details", "affected", "withdrawn", "published")


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    advisory: str
    aliases: tuple[str, ...]
    fixed_in: tuple[str, ...]


def pinned(requirements: Path) -> list[str]:
    """The canonical names of the `name==version` lines of a requirements file."""
    names: list[str] = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            names.append(canonicalize_name(line.split("==", 1)[0].split("[", 1)[0]))
    return names


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _in_range(version: Version, events: list[dict[str, str]]) -> bool:
    """OSV's evaluation of one ECOSYSTEM range: walk its events in version order."""

    def order(event: dict[str, str]) -> Version:
        (value,) = event.values()
        return Version("0") if value == "0" else (_version(value) or Version("0"))

    affected = False
    for event in sorted(events, key=order):
        kind, value = next(iter(event.items()))
        limit = order(event)
        if kind == "introduced" and version >= limit:
            affected = True
        elif (kind == "fixed" and version >= limit) or (
            kind == "last_affected" and version > limit
        ):
            affected = False
    return affected


def affects(advisory: dict[str, Any], name: str, version: Version) -> bool:
    for affected in advisory.get("affected", []):
        package = affected.get("package", {})
        if package.get("ecosystem") != "PyPI" or canonicalize_name(package["name"]) != name:
            continue
        listed = {_version(v) for v in affected.get("versions", [])}
        if version in listed:
            return True
        for version_range in affected.get("ranges", []):
            if version_range.get("type") == "ECOSYSTEM" and _in_range(
                version, version_range["events"]
            ):
                return True
    return False


class NoAdvisoryDatabase(RuntimeError):
    """No advisories to audit against: nothing may be called free of known vulnerabilities."""


def ensure_database(directory: Path = ADVISORIES) -> Path:
    """The advisories' directory, read from ADVISORY_DB_GIT first when it is not there yet."""
    if (directory / DATABASE).exists():
        return directory
    source = os.environ.get("ADVISORY_DB_GIT", "")
    if not source or not Path(source).exists():
        raise NoAdvisoryDatabase(
            "no advisory database: set ADVISORY_DB_GIT to a clone (or bare git directory) of "
            f"github.com/pypa/advisory-database (now {source or 'unset'!r})"
        )
    refresh(Path(source), directory)
    return directory


@functools.cache
def _database(directory: Path) -> dict[str, list[dict[str, Any]]]:
    ensure_database(directory)
    with gzip.open(directory / DATABASE, "rt", encoding="utf-8") as stored:
        database: dict[str, list[dict[str, Any]]] = json.load(stored)
    return database


def advisories_for(name: str, directory: Path = ADVISORIES) -> list[dict[str, Any]]:
    return _database(directory).get(name, [])


class _OsvQuery(BaseHTTPRequestHandler):
    """POST /v1/query as osv.dev answers it: the advisories affecting one package version."""

    directory = ADVISORIES

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name = canonicalize_name(body["package"]["name"])
        version = _version(body["version"])
        matching = [
            advisory
            for advisory in advisories_for(name, self.directory)
            if version is not None and affects(advisory, name, version)
        ]
        answer = json.dumps({"vulns": matching} if matching else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


@contextmanager
def osv_endpoint(directory: Path = ADVISORIES) -> Iterator[str]:
    handler = type("OsvQuery", (_OsvQuery,), {"directory": directory})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/query"
    finally:
        server.shutdown()
        server.server_close()


def audit(requirements: Path, directory: Path = ADVISORIES) -> list[Finding]:
    """Run pip-audit over a pinned requirements file; every advisory that affects a pin."""
    ensure_database(directory)
    with osv_endpoint(directory) as url, tempfile.TemporaryDirectory() as cache:
        # Our own interpreter with fixed arguments: nothing from outside reaches the command.
        result = subprocess.run(  # nosec B603  # noqa: S603
            [
                sys.executable,
                "-m",
                "pip_audit",
                "--requirement",
                str(requirements),
                "--no-deps",
                "--disable-pip",
                "--vulnerability-service",
                "osv",
                "--osv-url",
                url,
                "--format",
                "json",
                "--progress-spinner",
                "off",
                "--cache-dir",
                cache,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    # pip-audit exits 1 when it found something; anything else non-zero is its own failure.
    if result.returncode not in (0, 1):
        raise RuntimeError(f"pip-audit failed ({result.returncode}): {result.stderr[-2000:]}")
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"pip-audit failed: {result.stderr[-2000:]}") from None
    skipped = [d for d in report["dependencies"] if "skip_reason" in d]
    if skipped:
        raise RuntimeError(f"pip-audit could not audit: {skipped}")
    return [
        Finding(
            package=dependency["name"],
            version=dependency["version"],
            advisory=vuln["id"],
            aliases=tuple(vuln["aliases"]),
            fixed_in=tuple(vuln["fix_versions"]),
        )
        for dependency in report["dependencies"]
        for vuln in dependency["vulns"]
    ]


def snapshot(directory: Path = ADVISORIES) -> dict[str, Any]:
    """The advisory-database commit and date the stored advisories were copied from."""
    ensure_database(directory)
    snapshot: dict[str, Any] = json.loads((directory / "SNAPSHOT").read_text(encoding="utf-8"))
    return snapshot


def _rfc3339(value: object) -> str:
    """YAML reads advisories' timestamps as datetimes; OSV (and pip-audit) want RFC 3339."""
    if not isinstance(value, dt.datetime):
        raise TypeError(f"not JSON: {value!r}")
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _advisory_files(source: Path) -> Iterator[tuple[str, str]]:
    """(package directory, YAML text) of every advisory in a clone or a bare git directory."""
    if (source / "vulns").is_dir():
        for path in sorted((source / "vulns").glob("*/*.yaml")):
            yield path.parent.name, path.read_text("utf-8")
        return
    archive = subprocess.run(  # nosec B603 B607  # noqa: S603
        ["git", "--git-dir", str(source), "archive", "--format=tar", "HEAD", "vulns"],  # noqa: S607
        capture_output=True,
        check=True,
        timeout=300,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and parts[2].endswith(".yaml"):
                extracted = tar.extractfile(member)
                assert extracted is not None
                yield parts[1], extracted.read().decode("utf-8")


def refresh(clone: Path, directory: Path = ADVISORIES) -> int:
    """Replace `directory` with every advisory of a copy of github.com/pypa/advisory-database
    (a clone, or a bare git directory); returns how many were kept. All packages, not only
    today's pins, so a dependency added later is audited without a refresh."""
    git = (
        ["git", "-C", str(clone)]
        if (clone / "vulns").is_dir()
        else ["git", "--git-dir", str(clone)]
    )
    # git from PATH, run on the copy the operator (or .ci/run) named.
    commit, date = subprocess.run(  # nosec B603 B607  # noqa: S603
        [*git, "log", "-1", "--format=%H %cI"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    database: dict[str, list[dict[str, Any]]] = {}
    for package, text in _advisory_files(clone):
        advisory = yaml.safe_load(text)
        kept = {key: advisory[key] for key in KEPT_FIELDS if key in advisory}
        database.setdefault(canonicalize_name(package), []).append(kept)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    # mtime=0: the same advisories give the same bytes, so an unchanged refresh is no diff.
    with (
        open(directory / DATABASE, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed,
    ):
        packed.write(json.dumps(database, sort_keys=True, default=_rfc3339).encode())
    (directory / "SNAPSHOT").write_text(
        json.dumps(
            {
                "source": "https://github.com/pypa/advisory-database",
                # The advisories' licence asks for attribution; this line is it.
                "license": "CC-BY-4.0, by the PyPA advisory-database contributors",
                "commit": commit,
                "committed_at": date,
                "copied_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "packages": len(database),
                "advisories": sum(len(advisories) for advisories in database.values()),
            },
            indent=1,
        )
        + "\n",
        "utf-8",
    )
    return sum(len(advisories) for advisories in database.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("-r", "--requirement", type=Path, default=CONSTRAINTS)
    parser.add_argument("--refresh", type=Path, metavar="CLONE")
    options = parser.parse_args(argv)
    if options.refresh:
        print(f"kept {refresh(options.refresh)} advisories")
        return 0
    try:
        findings = audit(options.requirement)
    except NoAdvisoryDatabase as missing:
        print(f"pip-audit: not audited: {missing}", file=sys.stderr)
        return 2
    meta = snapshot()
    print(
        f"pip-audit: {len(pinned(options.requirement))} pins of {options.requirement.name} "
        f"against advisory-database {meta['commit'][:12]} ({meta['committed_at']})"
    )
    for finding in findings:
        print(
            f"  {finding.package}=={finding.version}: {finding.advisory} "
            f"({', '.join(finding.aliases)}); fixed in {', '.join(finding.fixed_in) or '-'}"
        )
    print(f"{len(findings)} known vulnerabilities")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
