import pytest

from maxk.registry import Registry


def test_unknown_name_lists_known_ones():
    reg = Registry("thing")
    reg.register("a", len)
    reg.register("b", sum)
    with pytest.raises(KeyError, match="unknown thing 'c'; known: a, b"):
        reg.get("c")


def test_register_twice_with_different_object_is_an_error():
    reg = Registry("thing")
    reg.register("a", len)
    reg.register("a", len)  # same object: fine
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", sum)


def test_decorator_and_bind():
    reg = Registry("fn")

    @reg.register("scale")
    def scale(x, *, factor):
        return x * factor

    assert reg.bind("scale", factor=3)(2) == 6
    assert "scale" in reg and reg.names() == ["scale"] and len(reg) == 1
