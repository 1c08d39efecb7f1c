"""The access suite in full: every endpoint of the studio's own config, called over real HTTP by nobody, a rater of
campaign X, the lead of another campaign, X's lead and an admin (tests/studio/test_access_suite.py, which says what
each caller must get and how a refusal is checked).

    python benchmarks/access.py            # the whole matrix: every handler x five callers (a few minutes)
    python benchmarks/access.py --quick    # what CI's default run holds: coverage, no session, browser-only handlers

The suite runs under pytest in this process; the figures are the endpoints the config lists (with and without a
server function, and how many are private), the calls the matrix makes, and each test's outcome. The last line
printed is one JSON object; a section is appended to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from benchmarks._report import report  # noqa: E402
from storage.db import make_engine, upgrade_database  # noqa: E402
from studio.app import build_app  # noqa: E402
from studio.service import StudioService  # noqa: E402

SUITE = ROOT / "tests" / "studio" / "test_access_suite.py"


class Outcomes:
    """A pytest plugin keeping each test's outcome (a failed setup or teardown counts against its test)."""

    def __init__(self) -> None:
        self.by_test: dict[str, str] = {}

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or report.outcome != "passed":
            self.by_test[report.nodeid.split("::", 1)[1]] = report.outcome


def served_endpoints() -> dict:
    """What the studio's config lists, counted on an app built over an empty database."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'concord.db'}")
        upgrade_database(engine)
        dependencies = build_app(StudioService(engine), exports_dir=Path(tmp)).get_config_file()["dependencies"]
        engine.dispose()
    backend = [dep for dep in dependencies if dep["backend_fn"]]
    private = sum(dep.get("api_visibility") == "private" for dep in backend)
    return {"endpoints": len(dependencies), "with_server_function": len(backend), "private": private,
            "browser_only": len(dependencies) - len(backend)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the suite's fast tests, as CI's default run")
    args = parser.parse_args()
    counted = served_endpoints()
    outcomes, began = Outcomes(), time.monotonic()
    marks = "not slow" if args.quick else "slow or not slow"
    code = pytest.main([str(SUITE), "-q", "-p", "no:cacheprovider", "-m", marks], plugins=[outcomes])
    from tests.studio.test_access_suite import CALLERS  # after the run: pytest imports it first, to rewrite asserts

    callers = len(CALLERS) - 1  # the matrix's signed-in callers; nobody's calls are the no-session test
    figures = {
        "quick": args.quick,
        **counted,
        "callers": ["nobody" if caller is None else caller for caller in CALLERS],
        "calls_without_a_session": counted["endpoints"],
        "calls_in_the_matrix": 0 if args.quick else counted["with_server_function"] * callers,
        "tests": outcomes.by_test,
        "failed": sum(outcome != "passed" for outcome in outcomes.by_test.values()),
        "seconds": round(time.monotonic() - began, 1),
    }
    report("Access suite (benchmarks/access.py)", figures, "python benchmarks/access.py" + " --quick" * args.quick)
    sys.exit(int(code))


if __name__ == "__main__":
    main()
