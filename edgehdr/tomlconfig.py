"""Reading TOML/JSON configuration files against a schema, with errors that name the key.

Shared by the LED layout loader (``edgehdr.dimming.layout``) and the daemon
configuration (``edgehdr.pipeline.config``): unknown sections or keys and values
of the wrong type fail with ``FILE: [section] key = value: expected TYPE``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["finite_number", "read_table", "typed_entries", "unique_json_keys"]


def read_table(path: str | os.PathLike[str], error: type[Exception]) -> Any:
    """Parse ``path`` as JSON (``.json``) or TOML (anything else); ``error`` on a syntax error.

    TOML always gives a table (dict); the top level of a JSON file may be any value, which
    ``typed_entries`` then refuses.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a text file (byte {exc.start} is not UTF-8); expected TOML or JSON") from None
    is_json = Path(path).suffix.lower() == ".json"
    try:
        if is_json:
            data = json.loads(text, object_pairs_hook=unique_json_keys)  # TOML refuses a repeated key; so does this
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
    except Exception as exc:
        raise error(f"{path}: not valid {'JSON' if is_json else 'TOML'} ({exc})") from exc
    return data


def unique_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members as a dict; ``ValueError`` on a key given twice (json keeps the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} is given twice in one object")
        out[key] = value
    return out


def finite_number(value: Any) -> bool:
    """A real number (not a bool) that a float holds finitely: TOML and JSON integers beyond 1.8e308 are not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _coerce(source: str, section: str, key: str, value: Any, expected: type, error: type[Exception]) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        if not finite_number(value):
            raise error(f"{source}: [{section}] {key} = {value!r}: expected float (a number a float can hold)")
        return float(value)
    if (expected is int and isinstance(value, bool)) or not isinstance(value, expected):
        raise error(f"{source}: [{section}] {key} = {value!r}: expected {expected.__name__}")
    return value


def typed_entries(data: object, types: dict[str, Any], source: str,
                  error: type[Exception]) -> Iterator[tuple[str, str, Any]]:
    """Yield ``(section, key, value)`` of ``data`` after checking names and types against ``types``.

    ``types`` maps section -> key -> Python type (``float`` also accepts integers).
    """
    if not isinstance(data, dict):
        raise error(f"{source}: expected a table of sections {', '.join(types)}")
    for section, table in data.items():
        if section not in types:
            raise error(f"{source}: unknown section [{section}]; allowed: {', '.join(types)}")
        if not isinstance(table, dict):
            raise error(f"{source}: [{section}] must be a table")
        for key, value in table.items():
            if key not in types[section]:
                raise error(f"{source}: unknown key [{section}] {key}; allowed: {', '.join(types[section])}")
            yield section, key, _coerce(source, section, key, value, types[section][key], error)
