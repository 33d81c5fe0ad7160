"""Path convertors, as Starlette's: ``{name:int}`` in a route path.

``str`` (the default) matches one segment, ``int`` digits, ``float`` digits with an
optional fraction, ``uuid`` a lower-case hyphenated UUID, ``path`` the rest of the path,
slashes included. The engine's route table matches the segments (``path`` becomes a
catch-all there); a segment a convertor does not match makes the path match no route
(HTTP 404; a WebSocket handshake is refused as for a path with no route).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_PATH_PARAM = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True, slots=True)
class Convertor:
    name: str
    pattern: re.Pattern[str]
    convert: Callable[[str], Any]


CONVERTORS: dict[str, Convertor] = {
    convertor.name: convertor
    for convertor in (
        Convertor("str", re.compile(r"[^/]+"), str),
        Convertor("path", re.compile(r".*", re.DOTALL), str),
        Convertor("int", re.compile(r"[0-9]+"), int),
        Convertor("float", re.compile(r"[0-9]+(\.[0-9]+)?"), float),
        Convertor(
            "uuid",
            re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
            uuid.UUID,
        ),
    )
}


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A route path parsed once: its parameter names, the template the engine's table
    compiles (``{name}``, ``{*name}`` for ``path``), and the convertors that are more than
    ``str`` (empty for most routes, which then cost nothing per request)."""

    path: str
    param_names: frozenset[str]
    engine_path: str
    convertors: Mapping[str, Convertor]

    def convert(self, raw: Mapping[str, str]) -> dict[str, Any] | None:
        """The converted parameters, or ``None`` when a value does not fit its convertor."""
        params: dict[str, Any] = dict(raw)
        for name, convertor in self.convertors.items():
            value = raw.get(name)
            if value is None or convertor.pattern.fullmatch(value) is None:
                return None
            params[name] = convertor.convert(value)
        return params


def parse_path(path: str, owner: str) -> PathTemplate:
    """Check ``path`` (of ``owner``'s route) and parse its parameters."""
    if not path.startswith("/"):
        raise ValueError(f"route path {path!r} for {owner} must start with '/'")
    names: list[str] = []
    convertors: dict[str, Convertor] = {}
    pieces: list[str] = []
    position = 0
    for match in _PATH_PARAM.finditer(path):
        name, _, convertor_name = match.group(1).partition(":")
        if not name.isidentifier():
            raise ValueError(
                f"route path {path!r} for {owner}: {{{match.group(1)}}} is not a parameter; "
                "write {name} or {name:convertor}"
            )
        convertor_name = convertor_name or "str"
        convertor = CONVERTORS.get(convertor_name)
        if convertor is None:
            raise ValueError(
                f"route path {path!r} for {owner}: unknown path convertor "
                f"{convertor_name!r} in {{{match.group(1)}}}; known: {', '.join(CONVERTORS)}"
            )
        pieces.append(path[position : match.start()])
        if convertor.name == "path":
            if match.end() != len(path):
                raise ValueError(
                    f"route path {path!r} for {owner}: {{{match.group(1)}}} matches the rest "
                    "of the path, so it must end the route path"
                )
            pieces.append(f"{{*{name}}}")
        else:
            pieces.append(f"{{{name}}}")
            if convertor.name != "str":
                convertors[name] = convertor
        position = match.end()
        names.append(name)
    pieces.append(path[position:])
    if len(set(names)) != len(names):
        raise ValueError(f"route path {path!r} for {owner} repeats a parameter")
    return PathTemplate(path, frozenset(names), "".join(pieces), convertors)
