-- A backfill run's own part ends once, and a finished run stays finished.
--
-- A run is finished when its pending parts (its own, and one per chunk job) have all ended. A
-- chunk's end was already once-only (qlarius_backfill_chunks.ended); the run's own part was
-- not: a worker killed after the run's job committed its part, but before the job's status
-- was written, had the rescued job end that part a second time. The run then "finished" while
-- one chunk still ran, and that chunk's end, finding no part pending, set finished_at back to
-- NULL: a run that never finished (caught by make faults' kill_backfill scenario).

ALTER TABLE backfill_runs ADD COLUMN own_part_ended boolean NOT NULL DEFAULT false;
UPDATE backfill_runs SET own_part_ended = true WHERE finished_at IS NOT NULL;

CREATE OR REPLACE FUNCTION qlarius_end_backfill_chunk(p_run_id bigint, p_table text,
                                                      p_first_id bigint, p_failed boolean)
RETURNS TABLE (run_finished boolean) LANGUAGE sql AS $$
    WITH ended AS (
        UPDATE qlarius_backfill_chunks SET ended = true
        WHERE run_id = p_run_id AND table_name = p_table AND first_id = p_first_id AND NOT ended
        RETURNING 1
    )
    UPDATE backfill_runs
    SET chunks_pending = chunks_pending - 1,
        chunks_failed = chunks_failed + p_failed::int,
        finished_at = CASE WHEN chunks_pending = 1 THEN now() ELSE finished_at END,
        elapsed_ms = CASE WHEN chunks_pending = 1
                          THEN (extract(epoch FROM now() - started_at) * 1000)::bigint
                          ELSE elapsed_ms END
    WHERE id = p_run_id AND EXISTS (SELECT 1 FROM ended)
    RETURNING chunks_pending = 0
$$;
