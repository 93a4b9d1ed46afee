-- A backfill run that shares its backlog out as chunk jobs is finished when its last chunk
-- is: its row shows the chunks pending until then, the totals the chunks add, and the
-- moment and length of the whole run.
ALTER TABLE backfill_runs
    ADD COLUMN chunks_pending int NOT NULL DEFAULT 0,
    ADD COLUMN chunks_failed int NOT NULL DEFAULT 0;

-- How far each chunk got: a retried chunk resumes after its last committed batch, so nothing
-- it already counted (orphans, which stay NULL) is counted twice.
CREATE TABLE qlarius_backfill_chunks (
    run_id bigint NOT NULL REFERENCES backfill_runs (id) ON DELETE CASCADE,
    table_name text NOT NULL,
    first_id bigint NOT NULL,
    done_through bigint,
    ended boolean NOT NULL DEFAULT false,
    PRIMARY KEY (run_id, table_name, first_id)
);

-- A chunk's end, once (success through chunk_ended.sql; failure, cancel or abort here).
CREATE FUNCTION qlarius_end_backfill_chunk(p_run_id bigint, p_table text, p_first_id bigint,
                                           p_failed boolean)
RETURNS TABLE (run_finished boolean) LANGUAGE sql AS $$
    WITH ended AS (
        UPDATE qlarius_backfill_chunks SET ended = true
        WHERE run_id = p_run_id AND table_name = p_table AND first_id = p_first_id AND NOT ended
        RETURNING 1
    )
    UPDATE backfill_runs
    SET chunks_pending = chunks_pending - 1,
        chunks_failed = chunks_failed + p_failed::int,
        finished_at = CASE WHEN chunks_pending = 1 THEN now() END,
        elapsed_ms = CASE WHEN chunks_pending = 1
                          THEN (extract(epoch FROM now() - started_at) * 1000)::bigint END
    WHERE id = p_run_id AND EXISTS (SELECT 1 FROM ended)
    RETURNING chunks_pending = 0
$$;

CREATE FUNCTION qlarius_backfill_chunk_job_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM qlarius_end_backfill_chunk((NEW.args ->> 'run_id')::bigint, NEW.args ->> 'table',
                                       (NEW.args ->> 'first_id')::bigint, true);
    RETURN NULL;
END;
$$;
CREATE TRIGGER qlarius_backfill_chunk_failed AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW
    WHEN (NEW.task_name = 'backfill_snapshot_chunk' AND OLD.status IN ('todo', 'doing')
          AND NEW.status IN ('failed', 'cancelled', 'aborted')
          AND qlarius_positive_id(NEW.args, 'run_id') IS NOT NULL
          AND qlarius_positive_id(NEW.args, 'first_id') IS NOT NULL)
    EXECUTE FUNCTION qlarius_backfill_chunk_job_ended();

-- A retried run (its job rescued from a dead worker, or failed for a moment) continues its own
-- row: its chunks and its part of the pending count are there.
CREATE UNIQUE INDEX backfill_runs_job_idx ON backfill_runs (job_id) WHERE job_id IS NOT NULL;
