-- Where each backfill run's time went (backfill_phases.py): milliseconds per phase (find,
-- fill, commit, history, share, audit, connect), summed over the run's parts (its own job and
-- each chunk job) as each ends; the run's "run N finished" line carries them.
ALTER TABLE backfill_runs ADD COLUMN phase_ms jsonb NOT NULL DEFAULT '{}';

-- The sum, key by key, of two {"phase": ms} objects.
CREATE FUNCTION qlarius_add_phase_ms(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT COALESCE(jsonb_object_agg(k, COALESCE((a ->> k)::bigint, 0)
                                        + COALESCE((b ->> k)::bigint, 0)), '{}'::jsonb)
    FROM (SELECT jsonb_object_keys(a) UNION SELECT jsonb_object_keys(b)) keys(k)
$$;
