"""Error messages of a flat pydantic model: one ``key: what is wrong (got VALUE)`` line per key.

Pydantic's own error dump (types, URLs, nested locations) never reaches a user; every line
names the key, says what it accepts and shows the value given, and unknown keys get the
closest valid spelling.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from debcr.errors import ConfigError

__all__ = ["Messages", "UnknownKeyError", "report", "show"]


class UnknownKeyError(ConfigError, KeyError):
    """An unknown configuration key: a `ConfigError` and a `KeyError`.

    Being a ``KeyError`` keeps ``config["key"]`` behaving like the original's dict.
    """

    # KeyError's own __str__ would print the message in quotes.
    __str__ = BaseException.__str__


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def report(problems: list[str], source: str) -> ConfigError:
    """One `ConfigError` listing ``problems`` (one line each) found in ``source``."""
    count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
    error = ConfigError(f"invalid {source} ({count}):\n" + "\n".join(f"  {p}" for p in problems))
    # The lines, for callers (GUIs) that show each problem beside its key.
    error.problems = problems  # type: ignore[attr-defined]
    return error


class Messages:
    """The messages about one flat model's keys.

    Parameters
    ----------
    model : type of pydantic.BaseModel
        The model; its fields (and their aliases) are the valid keys.
    allowed : mapping
        Field name to what it accepts, in words, for the fields whose rule is not spelled
        out by their type and bounds.
    """

    def __init__(self, model: type[BaseModel], allowed: Mapping[str, str]) -> None:
        self.fields = model.model_fields
        self.allowed_words = dict(allowed)
        #: Every accepted key spelling (field names and aliases) -> field name.
        self.field_by_key: dict[str, str] = {name: name for name in self.fields}
        self.field_by_key.update(
            {info.alias: name for name, info in self.fields.items() if info.alias}
        )

    def allowed(self, field: str) -> str:
        """What ``field`` accepts, in words (from its type and bounds unless spelled out)."""
        if field in self.allowed_words:
            return self.allowed_words[field]
        info = self.fields[field]
        annotation = info.annotation
        if get_origin(annotation) is Literal:
            return "one of " + ", ".join(repr(v) for v in get_args(annotation))
        if annotation is bool:
            return "true or false"
        kind = {int: "an integer", float: "a finite number"}.get(annotation, "text")
        bounds = []
        for meta in info.metadata:
            for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                if getattr(meta, attr, None) is not None:
                    bounds.append(f"{symbol} {getattr(meta, attr)}")
            if getattr(meta, "multiple_of", None) is not None:
                bounds.append(f"a multiple of {meta.multiple_of}")
        return " ".join([kind, " and ".join(bounds)]).strip()

    def suggest(self, key: str) -> str:
        """``did you mean 'x'? `` for a near miss of a valid key ('' if none), case-blind."""
        lowered = {k.lower(): k for k in self.field_by_key}
        close = difflib.get_close_matches(str(key).lower(), list(lowered), n=1, cutoff=0.6)
        return f"did you mean {self.field_by_key[lowered[close[0]]]!r}? " if close else ""

    def unknown_key(self, key: Any, value: Any = None, *, show_value: bool = True) -> str:
        """The line for an unknown key (or a nested section) given ``value``."""
        if isinstance(value, Mapping):
            inner = ", ".join(str(k) for k in value) or "its keys"
            return (
                f"{key}: nested sections are not supported, the config is flat; move "
                f"{inner} to the top level (got a section)"
            )
        got = f" (got {show(value)})" if show_value else ""
        return f"{key}: unknown key; {self.suggest(key)}valid keys: {', '.join(self.fields)}{got}"

    def field_name(self, key: str) -> str:
        """The field a key spelling refers to; `UnknownKeyError` if none."""
        if isinstance(key, str) and key in self.field_by_key:
            return self.field_by_key[key]
        raise UnknownKeyError(self.unknown_key(key, show_value=False))

    def problems(self, exc: ValidationError, data: Mapping[str, Any] | None) -> list[str]:
        """One ``key: problem (got VALUE)`` line per key that failed."""
        lines: dict[str, str] = {}
        for error in exc.errors():
            loc, ctx = error["loc"], error.get("ctx") or {}
            inner = ctx.get("error")
            if isinstance(inner, ConfigError) and hasattr(inner, "problems"):
                # Validating through pydantic calls the model's __init__, whose ConfigError
                # pydantic wraps; its lines are already complete.
                for line in inner.problems:
                    lines.setdefault(line.split(":", 1)[0], line)
                continue
            if error["type"] == "extra_forbidden":
                key = str(loc[0])
                line = self.unknown_key(key, error["input"])
            elif not loc and "key" in ctx:
                # Raised by a model validator (cross-field check): the message is complete.
                key = ctx["key"]
                line = f"{key}: {error['msg']}"
            elif not loc:
                key = "config"
                line = f"config: must be a mapping of key: value pairs (got {show(error['input'])})"
            else:
                key = str(loc[0])
                # The top-level value, not the inner item a union or list member complained
                # about.
                value = data[key] if data is not None and key in data else error["input"]
                allowed = self.allowed(self.field_by_key.get(key, key))
                line = f"{key}: must be {allowed} (got {show(value)})"
            lines.setdefault(key, line)
        return list(lines.values())

    def invalid(
        self, exc: ValidationError, data: Mapping[str, Any] | None, source: str
    ) -> ConfigError:
        """``exc`` (raised validating ``data`` from ``source``) as a `ConfigError`."""
        return report(self.problems(exc, data), source)
