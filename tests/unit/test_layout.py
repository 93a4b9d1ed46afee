"""The README's Layout section draws the tree as it is: every module of the package is named
under its folder, and everything it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "qlarius_jobs"
FILE = re.compile(r"[A-Za-z_][\w.]*\.(?:py|sql|toml|png)\b")


def _tree() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1]
    return section.split("```\n", 2)[1].splitlines()


def _sections(lines: list[str]) -> dict[str, str]:
    """The text of each package folder's entry (``  jobs/`` and the lines below it)."""
    sections: dict[str, str] = {"": ""}  # "": the modules at the package's top
    current: str | None = None
    inside = False
    for line in lines:
        if line.startswith("qlarius_jobs/"):
            inside = True
            continue
        if inside and not line.startswith(" "):
            break  # past the package
        if not inside:
            continue
        match = re.match(r"^  ([a-z_]+)/", line)
        if match:
            current = match[1]
            sections[current] = ""
        elif re.match(r"^  \S", line):
            current = ""
        if current is not None:
            sections[current] += line + "\n"
    return sections


def test_every_module_is_drawn_under_its_folder():
    sections = _sections(_tree())
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py") or "_sql" in path.parts:
            continue
        folder = "" if path.parent == PACKAGE else path.parent.relative_to(PACKAGE).parts[0]
        if folder not in sections or not re.search(
            rf"\b{re.escape(path.name)}\b", sections[folder]
        ):
            missing.append(str(path.relative_to(ROOT)))
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert not missing, f"modules the README's Layout does not draw: {missing}"
    assert folders == set(sections) - {""}, "the package's folders and the Layout's differ"


def test_everything_drawn_exists():
    lines = _tree()
    sections = _sections(lines)
    absent = []
    for folder, text in sections.items():
        for name in FILE.findall(text):
            if not (PACKAGE / folder / name).exists():
                absent.append(f"qlarius_jobs/{folder}/{name}".replace("//", "/"))
    for line in lines:
        top = line.split()[0] if line and not line.startswith(" ") else None
        if top and not (ROOT / top.rstrip("/")).exists():
            absent.append(top)
    assert not absent, f"the README's Layout draws what does not exist: {absent}"
