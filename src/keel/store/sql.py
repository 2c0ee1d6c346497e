"""Quoting for the SQL text keel writes for DuckDB: identifiers and string literals.

Every module that builds DuckDB SQL from names or paths it did not write itself
(column names, feature names, file patterns) quotes them with these two
functions, so the rule lives in one place.
"""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """A quoted identifier: a name with a double quote in it has that quote doubled."""
    return '"' + name.replace('"', '""') + '"'


def sql_string(value: str) -> str:
    """A string literal: single quotes in ``value`` are doubled."""
    return "'" + value.replace("'", "''") + "'"
