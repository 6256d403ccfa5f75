"""The README's file map: every file it names exists, and every core module is on it."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mapped_paths() -> list[str]:
    lines = ROOT.joinpath("README.md").read_text().splitlines()
    start = lines.index("| question | file |")
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    found = []
    for row in rows:
        answer = row.rstrip("|").rsplit("|", 1)[1]
        for path in re.findall(r"`([^`]+)`", answer):
            # Short forms continue the previous path's package: `models/frame_modules.py`.
            top = path.split("/")[0]
            found.append(
                path
                if top in {"xnemo_core", "nodes", "bench", "docs", "bundled", "web", "workflows", "tests"}
                else f"xnemo_core/{path}"
            )
    return found


def test_every_file_the_map_names_exists():
    missing = [path for path in mapped_paths() if not (ROOT / path.rstrip("/")).exists()]
    assert not missing


def test_every_core_module_is_on_the_map():
    paths = mapped_paths()
    modules = [p.relative_to(ROOT).as_posix() for p in (ROOT / "xnemo_core").rglob("*.py") if p.name != "__init__.py"]
    unmapped = [m for m in modules if not any(m == p or m.startswith(p.rstrip("/") + "/") for p in paths)]
    assert not unmapped
