"""kprobegen: YAML hook specs → kprobe/kretprobe kernel modules → exact counts."""

from pathlib import Path

__version__ = "0.1.0"


def templates_dir() -> Path:
    """templates/ beside the package in a source checkout; kprobegen/templates in a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "module.c.j2").is_file():
            return candidate
    return here.parent / "templates"
