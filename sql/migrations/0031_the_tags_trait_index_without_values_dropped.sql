-- The (trait_id, me_file_id) index of me_file_tags, superseded by 0030's, which has the same
-- keys and includes tag_value: kept, it would only cost every tag write.
-- A drop needs the table's strongest lock, and while a drop waits for it every other query of
-- the table queues behind the drop: so it never waits more than 200 ms at a time. When the
-- table is busy (an application transaction still open on it), it steps aside for 200 ms and
-- tries again, for up to a minute, then stops with one line saying why (run `migrate` again).
DO $$
DECLARE
    previous text := current_setting('lock_timeout');
BEGIN
    FOR attempt IN 1..150 LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '200ms', true);
            DROP INDEX IF EXISTS me_file_tags_trait_me_file_idx;
            PERFORM set_config('lock_timeout', previous, true);
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            PERFORM pg_sleep(0.2);
        END;
    END LOOP;
    RAISE EXCEPTION 'me_file_tags stayed in use for a minute: could not drop its superseded '
        'index me_file_tags_trait_me_file_idx; run migrate again when the table is quieter'
        USING ERRCODE = 'lock_not_available';
END
$$;
