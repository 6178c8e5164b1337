"""Every ``--set`` key of a recipe with its value and meaning, read from the config dataclasses' docstrings.

``qkv train CONFIG --list-keys`` prints this table; the meanings come from the ``Attributes:`` sections of
:class:`~qkv.recipes.config.Recipe`, its sections' dataclasses and :class:`~qkv.training.TrainConfig`, so the
table and the API documentation cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re
from typing import Any

__all__ = ["describe_keys", "format_keys", "field_docs"]


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field name: its one-paragraph description}`` from the ``Attributes:`` section of ``cls``'s docstring.

    An entry is ``name: text`` or ``name, other: text`` (both names get the text); more deeply indented lines
    continue the entry above.
    """
    doc = inspect.getdoc(cls) or ""
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    docs: dict[str, str] = {}
    names: list[str] = []
    for line in section.splitlines():
        if not line.strip():
            continue
        m = re.match(r"^ {4}([A-Za-z_][\w, ]*):\s*(.*)$", line)
        if m and not line.startswith("     "):
            names = [n.strip() for n in m.group(1).split(",")]
            for n in names:
                docs[n] = m.group(2).strip()
        elif line.startswith(" ") and names:
            for n in names:
                docs[n] += " " + line.strip()
        else:  # the section ended
            break
    return {k: v.replace("``", "") for k, v in docs.items()}


def describe_keys(config: Any, prefix: str = "") -> list[tuple[str, Any, str]]:
    """``(key, value, meaning)`` for every leaf field of a config dataclass, nested sections as ``a.b``."""
    rows: list[tuple[str, Any, str]] = []
    docs = field_docs(type(config))
    for f in dataclasses.fields(config):
        if not f.init:
            continue
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            rows += describe_keys(value, f"{prefix}{f.name}.")
        else:
            rows.append((prefix + f.name, value, docs.get(f.name, "")))
    return rows


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value if not isinstance(value, tuple) else list(value))
    return str(value)


def format_keys(config: Any) -> str:
    """The table ``qkv train --list-keys`` prints: ``key = value`` and its meaning, one key per line."""
    rows = [(k, _show(v), meaning) for k, v, meaning in describe_keys(config)]
    width = max(len(f"{k} = {v}") for k, v, _ in rows)
    width = min(width, 48)
    return "\n".join(f"{f'{k} = {v}':<{width}}  {meaning}".rstrip() for k, v, meaning in rows)
