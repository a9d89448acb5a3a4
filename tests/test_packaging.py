"""pyproject.toml declares every folder it installs, so `pip install -e .` stays quiet.

setuptools treats any folder under a package as a package of its own (a folder of data files
such as stedloop/study/static included) and warns at length when one is missing from
`packages`; a license given as a TOML table is deprecated in favour of an SPDX string.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _setuptools_table() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        project: dict[str, Any] = tomllib.load(handle)
    return project


def _folders_with_files(source: Path) -> list[Path]:
    """The folder and every sub-folder that holds a file setuptools would see."""
    found = []
    for folder in [source, *sorted(p for p in source.rglob("*") if p.is_dir())]:
        if "__pycache__" in folder.parts or folder.name == "tests":
            continue
        if any(child.is_file() for child in folder.iterdir()):
            found.append(folder)
    return found


def test_every_installed_folder_is_a_declared_package() -> None:
    setuptools = _setuptools_table()["tool"]["setuptools"]
    declared = set(setuptools["packages"])
    package_dir: dict[str, str] = setuptools["package-dir"]
    missing = []
    for package, folder in package_dir.items():
        source = ROOT / folder
        for sub in _folders_with_files(source):
            name = ".".join([package, *sub.relative_to(source).parts])
            if name not in declared:
                missing.append(name)
    assert not missing, f"add to [tool.setuptools] packages: {missing}"


def test_license_is_an_spdx_string() -> None:
    project = _setuptools_table()["project"]
    assert project["license"] == "MIT"
    requires = _setuptools_table()["build-system"]["requires"]
    assert "setuptools>=77" in requires  # the first to read an SPDX license string
