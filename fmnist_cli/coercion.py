"""Typer (0.26 and later) turns every parameter's value into its annotated type through a pydantic
TypeAdapter, defaults included: importing pydantic and building the adapters is about 90 ms of each
command's start-up, a third of `fmnist data`. A default that already has its parameter's plain type
(42 for an int, 0.2 for a float, None for anything) comes out of that unchanged, so it is let through
as it is; whatever a user typed still goes through Typer's own coercion, with Typer's messages."""

from __future__ import annotations

from typing import Any

_PLAIN = (bool, int, float, str)


def defer_typer_adapters() -> bool:
    """Make Typer build a parameter's adapter only for a value that needs one. Returns whether it
    did: an older or newer Typer without these internals is left exactly as it is."""
    try:
        from dataclasses import dataclass

        from typer._coercion import RuntimeParam, build_runtime_param
        from typer.core import _TyperParameter
    except ImportError:
        return False
    original = _TyperParameter.get_runtime_param
    if getattr(original, "deferred", False):
        return True
    if not all(hasattr(RuntimeParam, name) for name in ("coerce", "_coerce_value")):
        return False
    try:
        deferred = _deferred_class(dataclass, RuntimeParam, build_runtime_param)
    except Exception:   # RuntimeParam is not the dataclass it was: leave Typer as it is
        return False

    def get_runtime_param(self):
        if self._runtime_param is None:
            try:
                descriptor = self.type_descriptor
                self._runtime_param = deferred(parameter_info=descriptor.parameter_info,
                                               annotation=descriptor.annotation, descriptor=descriptor)
            except Exception:   # a Typer whose internals differ: its own coercion, always
                return original(self)
        return self._runtime_param

    get_runtime_param.deferred = True
    _TyperParameter.get_runtime_param = get_runtime_param
    return True


def _deferred_class(dataclass, RuntimeParam, build_runtime_param):
    """The RuntimeParam that defers Typer's adapter (made here, so a Typer whose RuntimeParam is not
    a dataclass any more fails this call, not the import of the CLI)."""
    @dataclass(frozen=True)
    class Deferred(RuntimeParam):
        """Typer's None and multiple-value handling (RuntimeParam.coerce) as is; the adapter only
        when a value is not already what it would return."""

        descriptor: Any = None

        def _coerce_value(self, value, param, ctx):
            try:
                kept = _kept_as_is(self.descriptor, value)
            except Exception:   # a Typer whose descriptors differ: its own coercion, always
                kept = False
            if kept:
                return value
            real = build_runtime_param(self.descriptor)
            param._runtime_param = real
            return real._coerce_value(value, param=param, ctx=ctx)

    return Deferred


def _kept_as_is(descriptor, value) -> bool:
    """Whether Typer's adapter would return this value unchanged: a plain bool, int, float or str
    value of exactly the annotated type, with no parser, range, choices, path or file to apply."""
    annotation = descriptor.annotation
    if annotation not in _PLAIN or type(value) is not annotation:
        return False
    info = descriptor.parameter_info
    return (getattr(info, "parser", None) is None and not descriptor.is_ranged and not descriptor.is_choice
            and not descriptor.is_path and not descriptor.is_file and not descriptor.is_list
            and not descriptor.is_tuple)
