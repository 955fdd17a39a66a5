import pytest

from nas import Registry, RegistryError


def test_registry_refuses_duplicates_and_lists_known_names():
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    reg.register("b")(2)
    assert reg.get("b") == 2 and reg.names() == ["a", "b"] and "a" in reg
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("a", 3)
    with pytest.raises(RegistryError, match="unknown thing 'c'; known: a, b"):
        reg.get("c")
