"""The README's code blocks and who runs them.

Every fenced ``bash`` block in README.md is preceded by a marker naming what exercises it::

    <!-- exercised-by: ci -->           .ci/run (./dev.sh test, which also runs ./dev.sh demo)
    <!-- exercised-by: smoke-install --> tests/smoke_wheel.py runs it in the checkout
    <!-- exercised-by: smoke -->         tests/smoke_wheel.py runs it verbatim in a fresh virtualenv
    <!-- exercised-by: test_readme -->   tests/test_readme.py runs each command on small data
    <!-- exercised-by: stack -->         tests/test_client_libraries.py and tests/test_opensearch_blueprints.py
                                          run it against a real service (and node)

``python`` blocks carry the same markers (tests/test_readme.py executes them).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
MARKERS = ("ci", "smoke-install", "smoke", "test_readme", "stack")
_MARKER = re.compile(r"^<!--\s*exercised-by:\s*(\S+)\s*-->$")
_FENCE = re.compile(r"^```(\w*)")


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int  # 1-based line of the opening fence
    marker: str | None

    def commands(self) -> list[str]:
        """Shell commands, one per logical line (backslash continuations joined), comments dropped."""
        joined = re.sub(r"\\\n\s*", " ", self.text)
        out = []
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(shlex.join(words) if words[-1] != "&" else shlex.join(words[:-1]) + " &")
        return out


def readme_blocks(path: Path = README) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        start = index
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise ValueError(f"{path}:{start + 1}: unclosed code fence")
        previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = _MARKER.match(previous)
        blocks.append(
            Block(fence.group(1), "\n".join(lines[start + 1 : end]) + "\n", start + 1, marker.group(1) if marker else None)
        )
        index = end + 1
    return blocks


def blocks_for(marker: str, language: str = "bash") -> list[Block]:
    return [b for b in readme_blocks() if b.marker == marker and b.language == language]
