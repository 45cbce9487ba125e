"""Loading a module of benches/ (not a package) by file, once per test session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHES = Path(__file__).resolve().parent.parent / "benches"


def load_bench(name: str) -> ModuleType:
    """``benches/<name>.py`` as module ``name`` (the same module object on every call)."""
    if name in sys.modules:
        return sys.modules[name]
    if str(BENCHES) not in sys.path:  # the benches import each other as top-level modules, as when run as scripts
        sys.path.append(str(BENCHES))
    spec = importlib.util.spec_from_file_location(name, BENCHES / f"{name}.py")
    assert spec is not None and spec.loader is not None, f"{BENCHES / name}.py: not a Python module"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
