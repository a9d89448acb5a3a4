"""The user-facing docs stand on their own: no links into folders a user of stedloop does not
have (the development workspace's `../shared/`); papers and data are cited by reference."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USER_DOCS = [
    ROOT / "README.md",
    ROOT / "models" / "MODEL_CARD.md",
    *sorted((ROOT / "docs").glob("*.md")),
]


def test_user_docs_do_not_point_at_the_workspace_shared_folder() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in USER_DOCS
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "shared/" in line
    ]
    assert not found, "cite the paper or data by reference instead:\n" + "\n".join(found)
