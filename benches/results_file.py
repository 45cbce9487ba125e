"""What the benches share about writing their figures: the machine's CPU line and sections of RESULTS.md."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def lscpu_summary() -> tuple[str, str]:
    """(model name, SIMD flags) from `lscpu`."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown", "unknown"
    model = re.search(r"Model name:\s*(.+)", text)
    flags = re.search(r"Flags:\s*(.+)", text)
    simd = [f for f in (flags.group(1).split() if flags else []) if re.match(r"(sse4_2|avx|avx2|fma|avx512\w*|f16c|bmi2|avx_vnni|amx\w*)$", f)]
    return (model.group(1).strip() if model else "unknown"), " ".join(simd) or "none found"


def write_section(text: str, begin: str, end: str, path: Path = RESULTS) -> None:
    """Put ``text`` between the ``begin``/``end`` marker lines of ``path`` (replacing what they held, else
    appended at the end); each bench has its own markers."""
    current = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    block = f"{begin}\n{text}{end}\n"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        current = head + block + ("\n" + tail if tail else "")
    else:
        current = current.rstrip("\n") + "\n\n" + block
    path.write_text(current, encoding="utf-8")


def print_report(report: dict[str, Any], json_path: Path | None) -> None:
    """Print a bench's JSON report, and write it to ``json_path`` (its --json) when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if json_path is not None:
        json_path.write_text(text + "\n")
