"""The schema refuses what would make band matching and snapshots disagree: a tag on a parent
trait, a trait group holding another parent's traits, and moves that would create either."""

from __future__ import annotations

import psycopg
import pytest

from tests.integration.factories import standard_world


def test_a_tag_on_a_parent_trait_is_refused_with_a_clear_error(sync_conn):
    s = standard_world(sync_conn)
    me_file = s.w.me_file()
    with pytest.raises(
        psycopg.errors.CheckViolation, match=r"trait \d+ \(Sex \(Biological\)\) is a parent trait"
    ):
        s.w.tag(me_file, [s.sex])
    s.w.tag(me_file, [s.female])  # a child trait: fine
    with pytest.raises(psycopg.errors.CheckViolation, match="is a parent trait"):
        sync_conn.execute(
            "UPDATE me_file_tags SET trait_id = %s WHERE me_file_id = %s", (s.zip, me_file)
        )
    assert s.w.one("SELECT trait_id FROM me_file_tags WHERE me_file_id = %s", (me_file,)) == (
        s.female
    )


def test_a_trait_group_holds_only_its_parents_children(sync_conn):
    s = standard_world(sync_conn)
    with pytest.raises(psycopg.errors.CheckViolation, match="is not a child of trait"):
        s.w.group("women in zips", s.sex, [s.female, s.z10028])
    with pytest.raises(psycopg.errors.CheckViolation, match="is not a child of trait"):
        sync_conn.execute(
            "INSERT INTO trait_group_traits VALUES (%s, %s)", (s.g_sex, s.sex)
        )  # the parent itself is no child of itself


def test_moves_that_would_break_either_rule_are_refused(sync_conn):
    s = standard_world(sync_conn)
    s.w.me_file([s.female])
    with pytest.raises(psycopg.errors.CheckViolation, match="used by tags"):
        sync_conn.execute("UPDATE traits SET parent_trait_id = NULL WHERE id = %s", (s.female,))
    with pytest.raises(psycopg.errors.CheckViolation, match="trait group of another parent"):
        sync_conn.execute("UPDATE traits SET parent_trait_id = %s WHERE id = %s", (s.zip, s.heat))
    with pytest.raises(psycopg.errors.CheckViolation, match="holds traits that are not children"):
        sync_conn.execute(
            "UPDATE trait_groups SET parent_trait_id = %s WHERE id = %s", (s.zip, s.g_sex)
        )
    # a move that keeps both rules is fine: an unused child under another parent
    spare = s.w.child(s.sex, "Other", 3)
    sync_conn.execute("UPDATE traits SET parent_trait_id = %s WHERE id = %s", (s.zip, spare))
