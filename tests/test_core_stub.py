"""``_core.pyi`` describes the compiled module as it is: the same names, parameters, defaults,
properties and exception bases. The extension's own signatures (pyo3's ``__text_signature__``) are
the reference; the stub is parsed with ``ast``, not imported."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import lrt_rerank
import pytest
from lrt_rerank import _core

STUB = Path(lrt_rerank.__file__).with_name("_core.pyi")


def _stub_tree() -> dict[str, ast.stmt]:
    tree = ast.parse(STUB.read_text(encoding="utf-8"), filename=str(STUB))
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)}


def _public(names: list[str]) -> set[str]:
    return {n for n in names if not n.startswith("_")}


def _stub_params(node: ast.FunctionDef) -> list[tuple[str, Any]]:
    """(name, default) per parameter, ``self`` left out; a missing default is ``inspect.Parameter.empty``."""
    args = node.args.args
    defaults: list[Any] = [inspect.Parameter.empty] * (len(args) - len(node.args.defaults))
    defaults += [ast.literal_eval(d) for d in node.args.defaults]
    return [(a.arg, d) for a, d in zip(args, defaults, strict=True) if a.arg != "self"]


def _real_params(obj: Any) -> list[tuple[str, Any]]:
    signature = inspect.signature(obj)
    return [(p.name, p.default) for p in signature.parameters.values() if p.name not in ("self", "$self")]


def test_stub_names_are_the_module_names() -> None:
    assert set(_stub_tree()) == _public(dir(_core))


@pytest.mark.parametrize("name", sorted(n for n, node in _stub_tree().items() if isinstance(node, ast.FunctionDef)))
def test_function_parameters_and_defaults(name: str) -> None:
    node = _stub_tree()[name]
    assert isinstance(node, ast.FunctionDef)
    assert _stub_params(node) == _real_params(getattr(_core, name))


@pytest.mark.parametrize("name", sorted(n for n, node in _stub_tree().items() if isinstance(node, ast.ClassDef)))
def test_class_members_constructor_and_bases(name: str) -> None:
    node = _stub_tree()[name]
    assert isinstance(node, ast.ClassDef)
    real = getattr(_core, name)
    stub_bases = [ast.unparse(base) for base in node.bases]
    assert stub_bases == [base.__name__ for base in real.__bases__ if base is not object]

    methods = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
    properties = {n for n, m in methods.items() if any(ast.unparse(d) == "property" for d in m.decorator_list)}
    real_members = {n: v for n, v in vars(real).items() if not n.startswith("_")}
    real_properties = {n for n, v in real_members.items() if inspect.isgetsetdescriptor(v)}
    assert properties == real_properties
    assert _public(list(methods)) - properties == set(real_members) - real_properties
    if "__len__" in vars(real):
        assert "__len__" in methods
    for method in set(methods) - properties - {"__init__", "__len__"}:
        assert _stub_params(methods[method]) == _real_params(getattr(real, method)), method
    if issubclass(real, Exception):
        assert not methods, "exceptions carry no members of their own"
    else:
        assert "__init__" in methods
        assert _stub_params(methods["__init__"]) == _real_params(real)
