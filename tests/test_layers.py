"""The one-way dependencies of docs/architecture.md hold (import-linter, contracts in
pyproject.toml): core → loop → daemon and command line; the client, the quality network and
driver plugins import nothing above their place."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = (
    "import sys; from importlinter.cli import lint_imports; "
    "sys.exit(lint_imports(no_cache=True, no_logo=True))"
)


def test_the_import_contracts_hold() -> None:
    # A process of its own, from the repository root: import-linter reads the source tree of
    # the root packages from there (stedloop/, drivers/, plugins/).
    result = subprocess.run(
        [sys.executable, "-c", LINT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
