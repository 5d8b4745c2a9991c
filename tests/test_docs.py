"""The documentation in the repository: the README stays a front page, its links into docs/
resolve, and no tracked file cites a file that is not in the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 300

# Design notes that once lived beside the repository; the contracts are stated in docs/ now.
# Spelt in pieces so that this file does not cite them itself.
OUTSIDE_FILES = re.compile(
    "|".join(re.escape(name) for name in ("DESIGN" + ".md", "REFERENCE" + ".md", "../" + "shared"))
)

# A relative Markdown link: [text](target), not a URL and not an anchor in the same file.
RELATIVE_LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s]+)\)")


def tracked_files() -> list[Path]:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listing = subprocess.run(
        [git, "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / name for name in listing.split("\0") if name]


def test_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; it is the front page (at most {README_MAX_LINES}): "
        "move reference to docs/"
    )
    # It starts with the two commands that do everything on a fresh checkout.
    head = "\n".join(lines[:8])
    assert "make run" in head
    assert "make test" in head


def test_readme_links_resolve() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [match.group(1).split("#", 1)[0] for match in RELATIVE_LINK.finditer(text)]
    assert targets, "the README links into docs/"
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert missing == []


def test_no_file_cites_a_file_outside_the_repository() -> None:
    citing = []
    for path in tracked_files():
        if path.is_symlink() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary: a PNG plot, a compressed fixture
        for number, line in enumerate(text.splitlines(), start=1):
            if OUTSIDE_FILES.search(line):
                citing.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert citing == []
