"""The one line a worker process prints when it stops on its own names the database's error,
not only Procrastinate's wrapper (``ConnectorException: Database error.`` alone says nothing)."""

from __future__ import annotations

import psycopg
from procrastinate import exceptions

from qlarius_jobs.worker.supervision import one_line


def test_a_wrapped_database_error_is_named_in_the_stop_line():
    try:
        try:
            raise psycopg.errors.DuplicatePreparedStatement(
                'prepared statement "_pg3_0" already exists\nmore detail'
            )
        except psycopg.Error as exc:
            raise exceptions.ConnectorException() from exc
    except exceptions.ConnectorException as wrapped:
        line = one_line(wrapped)
    assert line == (
        "ConnectorException: Database error.; caused by DuplicatePreparedStatement: "
        'prepared statement "_pg3_0" already exists'
    )
    assert "\n" not in line


def test_an_error_without_a_cause_isone_line():
    assert one_line(RuntimeError("boom\nsecond line")) == "RuntimeError: boom"


def test_psycopg_losing_track_of_the_wire_is_a_lost_connection_not_a_bad_query():
    """Behind PgBouncer, during a server restart, psycopg once read two answers to a COMMIT:
    the worker stopped for good, where a lost connection is waited out."""
    from qlarius_jobs.worker.resilience import is_connection_error

    try:
        try:
            raise psycopg.InternalError("received 2 results from command 'COMMIT'")
        except psycopg.Error as exc:
            raise exceptions.ConnectorException() from exc
    except exceptions.ConnectorException as wrapped:
        assert is_connection_error(wrapped)
    # the server's own internal error (SQLSTATE XX000) is a bug to report, not an outage
    server_side = psycopg.errors.lookup("XX000")("could not open relation")
    assert server_side.sqlstate == "XX000"
    assert not is_connection_error(server_side)
