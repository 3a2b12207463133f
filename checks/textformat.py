"""Session settings that fix how values and definitions print as text.

Set before hashing rows or reading deparsed definitions, on both servers, so that what is
compared depends on the data and the schema only, not on a role's, a database's or the
caller's settings. They are the ones pg_dump sets, plus TimeZone; with only pg_catalog on the
search_path every user name prints schema-qualified (regclass values and definitions alike).
"""

from __future__ import annotations

import psycopg

SETTINGS = {
    "search_path": "pg_catalog",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "lc_monetary": "C",
    "xmloption": "content",
    "standard_conforming_strings": "on",
    "quote_all_identifiers": "off",
}


def apply(
    conn: psycopg.Connection, settings: dict[str, str] | None = None, *, local: bool
) -> dict[str, str]:
    """Set the settings (for the transaction when `local`); return the values they had."""
    chosen = SETTINGS if settings is None else settings
    names, values = list(chosen), list(chosen.values())
    rows = conn.execute(
        "SELECT current_setting(n) FROM unnest(%s::text[]) WITH ORDINALITY AS u(n, i) ORDER BY i",
        [names],
    ).fetchall()
    conn.execute(
        "SELECT set_config(n, v, %s) FROM unnest(%s::text[], %s::text[]) AS u(n, v)",
        [local, names, values],
    )
    return {name: row[0] for name, row in zip(names, rows)}
