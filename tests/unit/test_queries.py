"""The named queries: every file parses, every call names a query that exists with the shape
it runs and passes the parameters it names, and every query is used. No database: the files
and the code are read, not run."""

from __future__ import annotations

import ast
import importlib
import re
from collections import defaultdict
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Call:
    """A call ``X.method(..., "name", ..., a=..., b=...)`` of a module-level QueryFile ``X``."""

    where: str
    query_file: QueryFile
    name: str
    shape: Shape | None  # None: statement(), whose parameters are passed elsewhere
    keywords: frozenset[str]  # the query parameters it passes (not ``tables``), as far as known
    unresolved: bool  # a ``**mapping`` whose keys the source does not spell out passes more
    tables: frozenset[str] | None  # the keys of its ``tables``; None: not a literal dict


def _literal_keys(node: ast.expr | None) -> frozenset[str] | None:
    """The keys of a dict literal whose keys are all string literals (no ``**`` inside)."""
    if isinstance(node, ast.Dict) and all(
        isinstance(k, ast.Constant) and isinstance(k.value, str) for k in node.keys
    ):
        return frozenset(k.value for k in node.keys)  # type: ignore[union-attr]
    return None


def _enclosing(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.AST:
    """The function (or module) a node is in."""
    while not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module):
        node = parents[node]
    return node


def _mapping_keys(
    mapping: ast.expr, call: ast.Call, tree: ast.Module, parents: dict[ast.AST, ast.AST]
) -> frozenset[str] | None:
    """The keys of ``**mapping`` when the source spells them out: a local name assigned once,
    to a dict literal (``**scope``); or a call of a function of the module, the only one of
    its name, that returns dict literals with the same keys (``**_split(pairs)``,
    ``**batch.counters()``). None otherwise."""
    if isinstance(mapping, ast.Name):
        scope = _enclosing(call, parents)
        values = [
            n.value
            for n in ast.walk(scope)
            if (isinstance(n, ast.Assign) and [_name(t) for t in n.targets] == [mapping.id])
            or (isinstance(n, ast.AnnAssign) and _name(n.target) == mapping.id)
        ]
        return _literal_keys(values[0]) if len(values) == 1 else None
    if isinstance(mapping, ast.Call) and isinstance(mapping.func, ast.Name | ast.Attribute):
        called = mapping.func.id if isinstance(mapping.func, ast.Name) else mapping.func.attr
        defs = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == called
        ]
        if len(defs) != 1:
            return None
        returned = {
            _literal_keys(n.value)
            for n in ast.walk(defs[0])
            if isinstance(n, ast.Return) and _enclosing(n, parents) is defs[0]
        }
        if len(returned) == 1:
            return returned.pop()
    return None


def _name(target: ast.expr) -> str | None:
    return target.id if isinstance(target, ast.Name) else None


def _calls() -> list[Call]:
    """Every call ``X.method(..., "name", ...)`` in the package where ``X`` is a module-level
    QueryFile (its own ``SQL`` or one it imported), with the file that ``X`` loaded."""
    found = []
    for module_name, path in _modules():
        module = importlib.import_module(module_name)
        files = {k: v for k, v in vars(module).items() if isinstance(v, QueryFile)}
        if not files:
            continue
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
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
            keywords = {k.arg for k in node.keywords if k.arg is not None}
            unresolved = False
            for spread in (k.value for k in node.keywords if k.arg is None):
                keys = _mapping_keys(spread, node, tree, parents)
                unresolved |= keys is None
                keywords |= keys or set()
            tables = [k.value for k in node.keywords if k.arg == "tables"]
            found.append(
                Call(
                    where=where,
                    query_file=files[node.func.value.id],
                    name=name.value,
                    shape=shape,
                    keywords=frozenset(keywords - {"tables"}),
                    unresolved=unresolved,
                    # no tables: no {placeholder} filled
                    tables=_literal_keys(tables[0]) if tables else frozenset(),
                )
            )
    return found


# What psycopg replaces: ``%(name)s``; ``%%`` is a literal percent sign, not a placeholder.
_PARAMETER = re.compile(r"%%|%\((\w+)\)s")
# What ``tables`` fills (QueryFile.statement): ``{name}``, as a quoted identifier.
_TABLE = re.compile(r"\{(\w+)\}")


def _parameters(text: str) -> frozenset[str]:
    return frozenset(m[1] for m in _PARAMETER.finditer(text) if m[1])


def test_every_query_file_parses_and_names_are_unique_per_file():
    files = _query_files()
    assert len(files) >= 10
    for path in files:
        assert QueryFile(path).queries, f"{path}: no queries"


_NOT_IN_SUBQUERY = re.compile(r"\bNOT\s+IN\s*\(\s*SELECT\b", re.IGNORECASE)


def test_no_statement_looks_rows_up_with_not_in_a_subquery():
    """``x NOT IN (SELECT ...)`` is a hashed lookup only while the planner expects the
    subquery to fit in hash_mem; beyond that it rescans the subquery for each row: quadratic
    on a populate of hundreds of thousands (and never true when the subquery yields a NULL).
    Differences of sets are written ``EXCEPT``, which hashes or sorts whatever the size."""
    found = [
        f"{path.relative_to(sql_root())}:{text.count(chr(10), 0, m.start()) + 1}"
        for path in sorted(sql_root().rglob("*.sql"))
        for text in [path.read_text(encoding="utf-8")]
        for m in _NOT_IN_SUBQUERY.finditer(
            # comments out: they may quote the pattern they warn about
            re.sub(r"--[^\n]*", lambda c: " " * len(c.group()), text)
        )
    ]
    assert not found, found


def test_every_call_names_an_existing_query_with_its_declared_shape():
    calls = _calls()
    assert len(calls) > 100
    problems = []
    for call in calls:
        try:
            call.query_file.get(call.name, call.shape)
        except QueryError as exc:
            problems.append(f"{call.where}: {exc}")
    assert not problems, "\n".join(problems)


def test_every_call_passes_the_parameters_its_query_names():
    """The keyword names of each call are the query's ``%(name)s`` placeholders, no more, no
    fewer (a missing one fails at run time, in whatever path the tests did not take; an extra
    one is silently ignored); its ``tables`` keys are the query's ``{name}`` placeholders."""
    checked, partly, problems = 0, 0, []
    for call in _calls():
        if call.shape is None or call.name not in call.query_file.queries:
            continue  # statement(): run elsewhere; an unknown name: the test above says so
        text = call.query_file.get(call.name).text
        wanted, passed = _parameters(text), call.keywords
        if call.unresolved:
            # a **mapping of unknown keys may bring the rest: only the known names are checked
            partly += 1
            if passed - wanted:
                problems.append(f"{call.where}: {call.name} has no {sorted(passed - wanted)}")
        else:
            checked += 1
            if passed != wanted:
                problems.append(
                    f"{call.where}: {call.name} takes {sorted(wanted)}, the call passes "
                    f"{sorted(passed)}"
                )
        tables = frozenset(_TABLE.findall(text))
        if call.tables is not None and call.tables != tables:
            problems.append(
                f"{call.where}: {call.name} fills {sorted(tables)}, the call gives tables "
                f"{sorted(call.tables)}"
            )
    assert not problems, "\n".join(problems)
    # most calls are checked in full, so that this test can fail
    assert checked > 250 and partly <= 5, (checked, partly)


def test_every_query_is_used():
    used: dict[Path, set[str]] = defaultdict(set)
    for call in _calls():
        used[call.query_file.path].add(call.name)
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
