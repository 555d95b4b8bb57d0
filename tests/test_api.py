"""The public API is documented: every exported name exists and has an optax-style docstring."""

import dataclasses
import functools
import inspect
import re
import sys
import types

import pytest

import jaxdl
import jaxdl.layers
from jaxdl import Layer

NAMESPACES = {"jaxdl": jaxdl, "jaxdl.layers": jaxdl.layers}


ALL_EXPORTS = [(namespace, name) for namespace in NAMESPACES.values() for name in namespace.__all__]


def public_members(module):
    """Functions and classes defined in ``module`` whose names do not start with ``_``."""
    return [
        (f"{module.__name__}.{name}", obj)
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == module.__name__
    ]


def documented_objects():
    """``(qualified name, object)`` for every public callable reachable from the ``__all__``s."""
    found = {}
    for namespace in NAMESPACES.values():
        for name in namespace.__all__:
            obj = getattr(namespace, name, None)  # a missing name fails its own test
            if isinstance(obj, types.ModuleType):
                found.update(public_members(obj))
            elif isinstance(obj, Layer):
                continue  # documented in its module's docstring, checked below
            elif callable(obj):
                found.setdefault(f"{namespace.__name__}.{name}", obj)
    return sorted(found.items())


def parameters(obj):
    """Names of the arguments a caller passes (a class: its ``__init__``'s, without ``self``)."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    return [name for name in signature.parameters if name not in ("self", "cls")]


@pytest.mark.parametrize(
    "namespace, name", ALL_EXPORTS, ids=[f"{n.__name__}.{x}" for n, x in ALL_EXPORTS]
)
def test_every_exported_name_exists(namespace, name):
    assert hasattr(namespace, name), f"{namespace.__name__}.__all__ lists {name!r}, not defined"


def test_all_has_no_duplicates_and_reexports_every_layer():
    for namespace in NAMESPACES.values():
        assert len(set(namespace.__all__)) == len(namespace.__all__), namespace.__name__
    missing = sorted(set(jaxdl.layers.__all__) - set(jaxdl.__all__))
    assert not missing, f"jaxdl.layers names not re-exported by jaxdl: {missing}"
    for name in jaxdl.layers.__all__:
        assert getattr(jaxdl, name) is getattr(jaxdl.layers, name), name


DOCUMENTED = documented_objects()


@pytest.mark.parametrize("qualname, obj", DOCUMENTED, ids=[q for q, _ in DOCUMENTED])
def test_public_callables_have_args_and_returns_sections(qualname, obj):
    doc = inspect.cleandoc(obj.__doc__ or "")  # its own, never one inherited from a base class
    assert doc and doc.strip(), f"{qualname} has no docstring"
    summary = doc.strip().splitlines()[0]
    assert summary.strip(), f"{qualname}: the docstring should open with a one-line summary"
    if inspect.isclass(obj):
        if dataclasses.is_dataclass(obj):
            assert_fields_described(qualname, obj, doc, [f.name for f in dataclasses.fields(obj)])
        elif fields := getattr(obj, "_fields", ()):  # a NamedTuple
            assert_fields_described(qualname, obj, doc, fields)
        elif parameters(obj) and "__init__" in vars(obj):
            assert "Args:" in doc, f"{qualname}: constructor arguments but no Args: section"
            assert_arguments_described(qualname, obj, doc)
        return
    if parameters(obj):
        assert "Args:" in doc, f"{qualname}: takes arguments but has no Args: section"
    assert "Returns:" in doc, f"{qualname}: no Returns: section"
    if not isinstance(obj, functools.partial):  # a variant's base function is checked itself
        assert_arguments_described(qualname, obj, doc)


def assert_fields_described(qualname, cls, doc, fields):
    """Each field has an ``Attributes:`` entry or, as in a config dataclass, a trailing comment."""
    source = inspect.getsource(cls)
    for field in fields:
        in_attributes = "Attributes:" in doc and re.search(rf"^\s+{field}:", doc, re.M)
        commented = re.search(rf"^\s+{field}\s*:[^#\n]*#\s*\S", source, re.M)
        assert in_attributes or commented, f"{qualname}: field {field!r} is not described"


def assert_arguments_described(qualname, obj, doc):
    """Every argument has an entry ``name: ...`` (or ``*name:``) in the Args: section."""
    args_section = doc.split("Args:", 1)[-1].split("Returns:", 1)[0]
    for name in parameters(obj):
        assert re.search(rf"^\s+\**{name}\b.*:", args_section, re.M), (
            f"{qualname}: argument {name!r} is not described under Args:"
        )


LAYER_INSTANCES = sorted(
    {
        (name, obj.apply.__module__)
        for namespace in NAMESPACES.values()
        for name in namespace.__all__
        if isinstance(obj := getattr(namespace, name, None), Layer)
    }
)


def test_layer_instances_exist():
    names = {name for name, _ in LAYER_INSTANCES}
    assert {"relu", "sigmoid", "tanh", "flatten", "identity"} <= names


@pytest.mark.parametrize("name, module", LAYER_INSTANCES, ids=[n for n, _ in LAYER_INSTANCES])
def test_layer_instances_are_named_in_their_module_docstring(name, module):
    doc = sys.modules[module].__doc__ or ""
    assert re.search(rf"`{name}`", doc), f"{name!r} is not described in the docstring of {module}"


def test_modules_say_what_they_own():
    modules = {obj.__module__ for _, obj in DOCUMENTED} | {m for _, m in LAYER_INSTANCES}
    modules |= {"jaxdl", "jaxdl.layers"}
    for module in sorted(modules):
        doc = sys.modules[module].__doc__
        assert doc and doc.strip(), f"{module} has no module docstring"


def test_checks_catch_an_undocumented_function():
    def undocumented(x):
        """Does something."""
        return x

    with pytest.raises(AssertionError, match="no Args: section"):
        test_public_callables_have_args_and_returns_sections("undocumented", undocumented)

    def missing_argument(x, y):
        """Adds.

        Args:
          x: a number.

        Returns:
          The sum.
        """
        return x + y

    with pytest.raises(AssertionError, match="argument 'y' is not described"):
        test_public_callables_have_args_and_returns_sections("missing_argument", missing_argument)
