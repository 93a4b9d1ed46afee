"""The named queries: every file parses, every call names a query that exists with the shape
it runs, and every query is used. No database: the files and the code are read, not run."""

from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from pathlib import Path

import pytest

import qlarius_jobs
from qlarius_jobs.db.queries import CALL_SHAPES, QueryError, QueryFile, Shape, parse, sql_root

PACKAGE = Path(qlarius_jobs.__file__).parent
QUERIES = sql_root() / "queries"  # migrations and monitoring.sql run whole, not by name


def _query_files() -> list[Path]:
    return sorted(QUERIES.rglob("*.sql"))


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def _calls() -> list[tuple[str, int, QueryFile, str, Shape | None]]:
    """Every call ``X.method(..., "name", ...)`` in the package where ``X`` is a module-level
    QueryFile (its own ``SQL`` or one it imported): (where, line, file, name, shape)."""
    found = []
    for module_name, path in _modules():
        module = importlib.import_module(module_name)
        files = {k: v for k, v in vars(module).items() if isinstance(v, QueryFile)}
        if not files:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in files
                and node.func.attr in CALL_SHAPES
            ):
                continue
            position, shape = CALL_SHAPES[node.func.attr]
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
            assert len(node.args) > position, f"{where}: no query name"
            name = node.args[position]
            assert isinstance(name, ast.Constant) and isinstance(name.value, str), (
                f"{where}: the query name must be a literal, so that it can be checked here"
            )
            found.append((where, node.lineno, files[node.func.value.id], name.value, shape))
    return found


def test_every_query_file_parses_and_names_are_unique_per_file():
    files = _query_files()
    assert len(files) >= 10
    for path in files:
        assert QueryFile(path).queries, f"{path}: no queries"


def test_every_call_names_an_existing_query_with_its_declared_shape():
    calls = _calls()
    assert len(calls) > 100
    problems = []
    for where, _, query_file, name, shape in calls:
        try:
            query_file.get(name, shape)
        except QueryError as exc:
            problems.append(f"{where}: {exc}")
    assert not problems, "\n".join(problems)


def test_every_query_is_used():
    used: dict[Path, set[str]] = defaultdict(set)
    for _, _, query_file, name, _ in _calls():
        used[query_file.path].add(name)
    unused = [
        f"{path.relative_to(QUERIES.parent)}: {name}"
        for path in _query_files()
        for name in QueryFile(path).queries
        if name not in used[path]
    ]
    assert not unused, "queries nothing uses:\n" + "\n".join(unused)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- name: a :one\nSELECT 1\n-- name: a :many\nSELECT 2\n", "defined twice"),
        ("-- name: a\nSELECT 1\n", "needs a shape"),
        ("-- name: a :rows\nSELECT 1\n", "needs a shape"),
        ("-- name: Bad-Name :one\nSELECT 1\n", "not snake_case"),
        ("-- name:\nSELECT 1\n", "malformed header"),
        ("SELECT 1\n-- name: a :one\nSELECT 1\n", "before the first"),
        ("-- name: a :one\n-- only a comment\n", "has no statement"),
    ],
)
def test_a_malformed_file_fails_when_it_loads(tmp_path, text, message):
    path = tmp_path / "bad.sql"
    with pytest.raises(QueryError, match=message):
        parse(path, text)


def test_a_query_run_by_the_wrong_shape_or_an_unknown_name_is_refused(tmp_path):
    path = tmp_path / "q.sql"
    path.write_text("-- A file comment.\n\n-- name: one_row :one\n-- doc\nSELECT 1 AS x\n")
    queries = QueryFile(path)
    # sent under its name, without its doc (pg_stat_activity shows which query it is)
    assert queries.get("one_row", Shape.ONE).text.strip() == "-- qlarius: one_row\nSELECT 1 AS x"
    with pytest.raises(QueryError, match=r"declared :one .* run as :many"):
        queries.get("one_row", Shape.MANY)
    with pytest.raises(QueryError, match="no query named 'nope'"):
        queries.get("nope")


def test_table_placeholders_are_quoted_identifiers(tmp_path):
    path = tmp_path / "q.sql"
    path.write_text("-- name: count_rows :one\nSELECT count(*) FROM {table}\n")
    statement = QueryFile(path).statement("count_rows", {"table": 'offers"; DROP TABLE x; --'})
    assert not isinstance(statement, str)
    assert statement.as_string(None) == (
        '-- qlarius: count_rows\nSELECT count(*) FROM "offers""; DROP TABLE x; --"\n'
    )
