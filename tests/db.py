"""Direct SQL on a test database, outside mailcore (as an operator or another program
would reach it): for checks the public API does not expose. ``?`` placeholders on both
stores."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import psycopg

from mailcore.store import sqlite_path


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql:", "postgres:"))


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement in its own transaction; the rows it returns (if any)."""
    if is_postgres(url):
        with psycopg.connect(url, autocommit=True) as pg:
            cur = pg.execute(sql.replace("?", "%s").encode(), params)
            return list(cur.fetchall()) if cur.description else []
    with closing(sqlite3.connect(sqlite_path(url))) as conn, conn:
        return conn.execute(sql, params).fetchall()


def scalar(url: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    rows = query(url, sql, params)
    return rows[0][0] if rows else None
