"""Decorators that declare D-Bus signatures as arguments instead of annotations.

dbus-next (and dbus-fast) read a member's D-Bus types from its annotations,
as string constants such as `-> "a{sv}"`. Linters read such strings as Python
forward references and reject them, so these helpers set the annotations on
the function at import time and then apply the library's own decorator: the
wire signature stays next to the member, and the source stays lint-clean.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

from ..dbuslib import PropertyAccess, dbus_property, method, signal

F = TypeVar("F", bound=Callable[..., Any])


def _annotate(fn: Callable[..., Any], in_signatures: tuple[str, ...], out: str) -> None:
    params = list(inspect.signature(fn).parameters)[1:]  # skip self
    if len(params) != len(in_signatures):
        raise TypeError(
            f"{fn.__qualname__}: {len(params)} parameters but {len(in_signatures)} D-Bus types"
        )
    annotations: dict[str, str] = dict(zip(params, in_signatures))
    if out:
        annotations["return"] = out
    fn.__annotations__ = annotations


SPEC_ATTRIBUTE = "__bouheki_dbus_method__"


@dataclass(frozen=True)
class MethodSpec:
    """A method as our own dispatcher (bouheki.bus.dispatch) needs it."""

    name: str
    in_signature: str
    out_signature: str
    fn: Callable[..., Any]  # the undecorated function: (self, *args) -> result

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


def dbus_method(name: str, *in_signatures: str, out: str = "") -> Callable[[F], F]:
    """A D-Bus method `name` taking one argument per entry of `in_signatures`.

    The library's decorator makes it appear in introspection; the MethodSpec
    attached to the result lets the adapter dispatch calls itself.
    """

    def decorate(fn: F) -> F:
        _annotate(fn, in_signatures, out)
        decorated = method(name=name)(fn)
        setattr(decorated, SPEC_ATTRIBUTE, MethodSpec(name, "".join(in_signatures), out, fn))
        return decorated  # type: ignore[no-any-return]

    return decorate


def method_specs(cls: type) -> dict[str, MethodSpec]:
    """The MethodSpecs of a class, by D-Bus member name."""
    specs: dict[str, MethodSpec] = {}
    for klass in reversed(cls.__mro__):
        for attr in vars(klass).values():
            spec: Optional[MethodSpec] = getattr(attr, SPEC_ATTRIBUTE, None)
            if spec is not None:
                specs[spec.name] = spec
    return specs


def dbus_signal(name: str, out: str) -> Callable[[F], F]:
    """A D-Bus signal `name`; calling the method emits what it returns."""

    def decorate(fn: F) -> F:
        # Only the return annotation matters for a signal; the Python
        # parameters are whatever the emitter needs to build the body.
        fn.__annotations__ = {"return": out}
        return signal(name=name)(fn)  # type: ignore[no-any-return]

    return decorate


def dbus_readonly_property(name: str, out: str) -> Callable[[Callable[[Any], Any]], Any]:
    """A read-only D-Bus property `name` whose getter returns type `out`."""

    def decorate(fn: Callable[[Any], Any]) -> Any:
        _annotate(fn, (), out)
        return dbus_property(access=PropertyAccess.READ, name=name)(fn)

    return decorate
