"""Root conftest.

Imports the workspace packages whose folder name equals their import name (`specs`,
`orchestratord`, `provisioners`) before any test module is collected. With
`--import-mode=importlib`, pytest names a test module after its path
(`orchestratord.tests.test_x`) and, for a parent it cannot find in `sys.modules`,
registers the folder itself as that parent, shadowing the installed package. Importing
the real packages first makes pytest reuse them.

Adds one test at the end of every session, whatever subset was selected:
`test_no_secret_used_by_the_session_appears_in_any_log_it_wrote` (SEC-04), which scans
every log file under the session's base temp directory for every secret registered with
`ci_harness.secret_scan` or stored there by design, and fails listing file:line and
what leaked (redacted).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ci_harness import secret_scan

import orchestratord
import provisioners
import specs

__all__ = ["orchestratord", "provisioners", "specs"]

_SESSION_DIR = pytest.StashKey[Path]()
SCAN_NAME = "test_no_secret_used_by_the_session_appears_in_any_log_it_wrote"


@pytest.fixture(autouse=True, scope="session")
def _session_dir(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> None:
    """Where this session's logs go: the base of every tmp_path and cluster root."""
    pytestconfig.stash[_SESSION_DIR] = tmp_path_factory.getbasetemp()


class SecretScan(pytest.Item):
    def runtest(self) -> None:
        root = self.config.stash.get(_SESSION_DIR, None)
        if root is None:  # no test ran before: nothing was written
            return
        known = {**secret_scan.discover(root), **secret_scan.registered()}
        leaks, files = secret_scan.scan(root, known)
        print(f"scanned {files} log files under {root} for {len(known)} secrets")
        if leaks:  # pytest.fail, not assert: no introspection that could show a value
            listing = "\n".join(str(leak) for leak in leaks[:50])
            pytest.fail(f"{len(leaks)} secret(s) in the logs under {root}:\n{listing}", False)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, SCAN_NAME


@pytest.hookimpl(trylast=True)  # after -k/-m/--deselect: the scan always runs, last
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if items:
        scan = SecretScan.from_parent(session, name=SCAN_NAME, nodeid=f"conftest.py::{SCAN_NAME}")
        items.append(scan)
