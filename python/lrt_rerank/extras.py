"""The optional parts of lrt-rerank and the pip extras that install them.

``pip install lrt-rerank`` gives the engine, the embedded first stage, ``eval`` and ``models import``.
The rest comes with an extra (see pyproject.toml): a command that needs a missing one says which, in
one line (:class:`MissingExtra`, reported by :func:`lrt_rerank.cli.main`).
"""

from __future__ import annotations

import importlib.util

#: extra -> the top-level modules it provides (the first missing one is named).
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "prometheus_client", "redis", "pydantic", "starlette"),
    "opensearch": ("opensearchpy",),
    "plot": ("matplotlib",),
    "train": ("torch", "transformers", "sentence_transformers"),
    "openvino": ("openvino", "nncf"),
}
#: top-level module -> the extra that installs it.
MODULE_EXTRA: dict[str, str] = {module: extra for extra, modules in EXTRAS.items() for module in modules}


class MissingExtra(ImportError):
    """A feature needs an extra that is not installed; the message is the one line a user sees."""

    def __init__(self, extra: str, what: str | None = None, module: str | None = None):
        self.extra = extra
        self.module = module
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}needs the {extra} extra: pip install 'lrt-rerank[{extra}]'", name=module)


def missing_module(extra: str) -> str | None:
    """The first module of ``extra`` that cannot be imported (found without importing it), or None."""
    for module in EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            return module
    return None


def require(extra: str, what: str | None = None) -> None:
    """Raise :class:`MissingExtra` unless every module of ``extra`` is installed."""
    module = missing_module(extra)
    if module is not None:
        raise MissingExtra(extra, what, module)


def as_missing_extra(exc: ImportError) -> MissingExtra | None:
    """``exc`` as the extra that would have provided its module, or None for a module no extra provides."""
    if isinstance(exc, MissingExtra):
        return exc
    top = (exc.name or "").split(".")[0]
    extra = MODULE_EXTRA.get(top)
    return MissingExtra(extra, module=top) if extra else None
