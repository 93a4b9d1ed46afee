-- The benchmarks' own statements: baselines, resets, samples.

-- name: bench_server_version :one
SELECT current_setting('server_version') AS version

-- name: bench_target_ids :one
SELECT array_agg(id ORDER BY id) AS ids FROM targets

-- name: bench_typical_snapshot :one
-- Benchmark: a snapshot of median size, the constant the floors write (same bytes per row).
SELECT matching_tags_snapshot AS snapshot
FROM target_populations WHERE matching_tags_snapshot IS NOT NULL
ORDER BY pg_column_size(matching_tags_snapshot)
OFFSET (SELECT count(*) / 2 FROM target_populations WHERE matching_tags_snapshot IS NOT NULL)
LIMIT 1

-- name: bench_save_null_rows :exec
-- Benchmark: remember which rows of {table} have a NULL snapshot, to reset them between runs.
CREATE TABLE IF NOT EXISTS {saved} AS
SELECT id FROM {table} WHERE matching_tags_snapshot IS NULL

-- name: bench_reset_null_rows :exec
-- Benchmark: make the remembered rows of {table} NULL again.
UPDATE {table} t SET matching_tags_snapshot = NULL FROM {saved} s WHERE t.id = s.id

-- name: bench_updated_by_backfill :one
SELECT COALESCE(sum(updated_populations + updated_offers + updated_ad_events), 0)::bigint AS rows
FROM backfill_runs

-- name: bench_sample_null_populations :many
-- Benchmark: the row-by-row way's sample.
SELECT id, me_file_id, target_band_id FROM target_populations
WHERE matching_tags_snapshot IS NULL ORDER BY id LIMIT %(sample)s

-- name: bench_old_way_read_tags :many
-- Benchmark, the old way: one query per row to read the tags that satisfy its band.
SELECT parent.id AS parent_id, parent.trait_name AS parent_name,
       parent.display_order AS parent_order, child.id AS child_id,
       COALESCE(NULLIF(t.tag_value, ''), child.trait_name) AS value,
       child.display_order AS child_order
FROM me_file_tags t
JOIN traits child ON child.id = t.trait_id
JOIN traits parent ON parent.id = child.parent_trait_id
WHERE t.me_file_id = %(me_file_id)s
  AND t.trait_id IN (SELECT trait_id FROM qlarius_band_traits WHERE band_id = %(band_id)s)

-- name: bench_old_way_update :exec
-- Benchmark, the old way: one update per row.
UPDATE target_populations SET matching_tags_snapshot = %(snapshot)s
WHERE id = %(id)s AND matching_tags_snapshot IS NULL

-- name: bench_old_way_insert :exec
-- Benchmark, the old way: one insert per population row.
INSERT INTO target_populations (target_band_id, me_file_id, matching_tags_snapshot)
VALUES (%(band_id)s, %(me_file_id)s, %(snapshot)s)
ON CONFLICT (target_band_id, me_file_id) DO NOTHING

-- name: bench_floor_fill :count
-- Benchmark floor: one plain UPDATE writing a constant snapshot to every NULL row of {table}.
UPDATE {table} SET matching_tags_snapshot = %(snapshot)s WHERE matching_tags_snapshot IS NULL

-- name: bench_floor_populate :count
-- Benchmark floor: one INSERT ... SELECT of the same pairs, with a constant snapshot.
INSERT INTO target_populations (target_band_id, me_file_id, matching_tags_snapshot)
SELECT band_id, me_file_id, %(snapshot)s FROM qlarius_band_memberships
WHERE target_id = ANY(%(target_ids)s::bigint[])

-- name: bench_clear_populations :exec
-- Benchmark: empty the targets' populations (and mark them not populated) before a populate.
WITH cleared AS (
    DELETE FROM target_populations tp USING target_bands b
    WHERE b.id = tp.target_band_id AND b.target_id = ANY(%(target_ids)s::bigint[])
)
UPDATE targets SET population_status = 'not_populated' WHERE id = ANY(%(target_ids)s::bigint[])

-- name: bench_sample_memberships :many
SELECT me_file_id, band_id FROM qlarius_band_memberships
WHERE target_id = ANY(%(target_ids)s::bigint[]) ORDER BY me_file_id LIMIT %(sample)s

-- name: bench_change_tags :many
-- Benchmark: give many MeFiles a new answer that some target looks for, as the app would.
WITH picked AS (
    SELECT m.id AS me_file_id,
           (SELECT tgt.trait_id FROM trait_group_traits tgt
            ORDER BY random() + m.id * 0 LIMIT 1) AS trait_id
    FROM me_files m ORDER BY random() LIMIT %(count)s
)
INSERT INTO me_file_tags (me_file_id, trait_id)
SELECT me_file_id, trait_id FROM picked
ON CONFLICT (me_file_id, trait_id) DO UPDATE SET updated_at = now()
RETURNING me_file_id

-- name: bench_change_tags_of :exec
-- Benchmark: give the given MeFiles another answer that some target looks for (the same kind
-- of change as bench_change_tags, for the floor to redo the same work).
INSERT INTO me_file_tags (me_file_id, trait_id)
SELECT m.id, (SELECT tgt.trait_id FROM trait_group_traits tgt ORDER BY random() + m.id * 0 LIMIT 1)
FROM unnest(%(me_file_ids)s::bigint[]) m(id)
ON CONFLICT (me_file_id, trait_id) DO UPDATE SET tag_value = 'again', updated_at = now()

-- name: bench_forget_pending :exec
-- Benchmark: the floor applies changes directly; drop the pending rows they recorded.
DELETE FROM qlarius_pending_syncs

-- name: bench_synced_targets :many
SELECT target_id FROM qlarius_synced_targets ORDER BY target_id

-- name: bench_jobs_pending :one
-- Benchmark: work left for the given queues (all when NULL): jobs waiting or running, and the
-- pending syncs (queue targets) or reconciles (queue offers) their drains would take.
SELECT (SELECT count(*) FROM procrastinate_jobs
        WHERE status IN ('todo', 'doing')
          AND (%(queues)s::text[] IS NULL OR queue_name = ANY(%(queues)s::text[])))
     + (SELECT count(*) FROM qlarius_pending_syncs
        WHERE %(queues)s::text[] IS NULL OR 'targets' = ANY(%(queues)s::text[]))
     + (SELECT count(*) FROM qlarius_pending_reconciles
        WHERE %(queues)s::text[] IS NULL OR 'offers' = ANY(%(queues)s::text[])) AS pending

-- name: bench_clear_jobs :exec
DELETE FROM procrastinate_jobs WHERE status NOT IN ('todo', 'doing')

-- name: bench_clear_waiting_jobs :exec
-- Benchmark: the jobs an earlier step left waiting in these queues (the settle passes its
-- populates deferred, say), gone before a step that times those queues.
DELETE FROM procrastinate_jobs WHERE status = 'todo' AND queue_name = ANY(%(queues)s::text[])

-- name: bench_vacuum_analyze :exec
-- After a bulk change: every side of a comparison starts from the same clean tables.
VACUUM ANALYZE

-- name: bench_checkpoint :exec
-- After the VACUUM: the pages written so far go to disk now, so no side of a comparison pays
-- for another's writes (a checkpoint spread over its measurement, or the first change of every
-- page after one logged whole).
CHECKPOINT

-- name: bench_analyze_sync_tables :exec
ANALYZE me_file_tags, qlarius_pending_syncs, target_populations

-- name: bench_analyze_jobs :exec
-- Statistics for a job table that just went from empty to thousands of rows; without them the
-- fetch query plans as if the table were empty (autovacuum would catch up within a minute).
ANALYZE procrastinate_jobs

-- name: bench_population_count :one
SELECT count(*) AS n FROM target_populations

-- name: bench_clear_backfill_runs :exec
DELETE FROM backfill_runs

-- name: bench_worker_count :one
SELECT count(*) AS n FROM procrastinate_workers

-- name: bench_fill_job_table :count
-- The console benchmark's job table: %(jobs)s jobs of every task and queue, most of them
-- succeeded, some failed, a few waiting (Procrastinate's trigger adds a 'deferred' event each).
INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts)
SELECT (ARRAY['default', 'targets', 'offers', 'maintenance'])[1 + mod(n, 4)],
       (ARRAY['create_initial_pending_offers', 'sync_pending_me_files', 'reconcile_pending_offers',
              'snapshot_band_populations'])[1 + mod(n, 4)],
       jsonb_build_object('n', n),
       (CASE WHEN mod(n, 100) = 0 THEN 'failed' WHEN mod(n, 100) = 1 THEN 'todo' ELSE 'succeeded' END)
           ::procrastinate_job_status,
       CASE WHEN mod(n, 100) = 0 THEN 3 ELSE 1 END
FROM generate_series(1, %(jobs)s) n

-- name: bench_fill_recent_events :count
-- Jobs that ended over the last three hours (about 5 a second), for the overview's charts.
INSERT INTO procrastinate_events (job_id, type, at)
SELECT id, CASE WHEN status = 'failed' THEN 'failed' ELSE 'succeeded' END::procrastinate_job_event_type,
       now() - make_interval(secs => (random() * 10800)::int)
FROM procrastinate_jobs
WHERE status IN ('succeeded', 'failed') ORDER BY id DESC LIMIT %(recent)s

-- name: bench_analyze_console_tables :exec
ANALYZE procrastinate_jobs, procrastinate_events

-- name: bench_clear_offers_of_targets :exec
-- Benchmark: the targets' campaigns have no offers yet (a first populate's campaigns wait for
-- it); their ad events keep their rows, without an offer (ON DELETE SET NULL).
DELETE FROM offers o USING campaigns c
WHERE c.id = o.campaign_id AND c.target_id = ANY(%(target_ids)s::bigint[])

-- name: bench_forget_all_pending :exec
-- Benchmark: nothing pending before a measurement (what the setup itself recorded is not its).
WITH syncs AS (DELETE FROM qlarius_pending_syncs),
     targets AS (DELETE FROM qlarius_pending_targets),
     criteria AS (DELETE FROM qlarius_pending_criteria),
     campaigns AS (DELETE FROM qlarius_pending_campaigns)
DELETE FROM qlarius_pending_reconciles

-- name: bench_last_worker_id :one
-- Benchmark: the newest worker registered so far (0: none).
SELECT COALESCE(max(id), 0) AS id FROM procrastinate_workers

-- name: bench_workers_since :one
-- Benchmark: how many workers registered after the one given.
SELECT count(*) AS n FROM procrastinate_workers WHERE id > %(after)s

-- name: bench_targets_populated :one
-- Benchmark: whether every given target's populate has committed (its status says so).
SELECT bool_and(population_status = 'populated') AS populated
FROM targets WHERE id = ANY(%(target_ids)s::bigint[])

-- name: bench_offer_count :one
SELECT count(*) AS n FROM offers

-- name: bench_same_work_fill_populations :count
-- Benchmark, the same work with no job around it: one UPDATE of every NULL population through
-- the snapshot function (what the backfill computes and writes, in one statement).
UPDATE target_populations tp
SET matching_tags_snapshot = s.snapshot, updated_at = now()
FROM (SELECT array_agg(me_file_id) AS m, array_agg(target_band_id) AS b
      FROM target_populations WHERE matching_tags_snapshot IS NULL) pairs,
     qlarius_matching_tags_snapshots(pairs.m, pairs.b) s
WHERE tp.matching_tags_snapshot IS NULL
  AND s.me_file_id = tp.me_file_id AND s.band_id = tp.target_band_id

-- name: bench_same_work_fill_copies :count
-- Benchmark, the same work with no job around it: one UPDATE of every NULL offer or ad event
-- ({table}) from its population's snapshot, as the backfill fills them.
UPDATE {table} c
SET matching_tags_snapshot = tp.matching_tags_snapshot
FROM target_populations tp
WHERE c.matching_tags_snapshot IS NULL
  AND tp.target_band_id = c.target_band_id AND tp.me_file_id = c.me_file_id
  AND tp.matching_tags_snapshot IS NOT NULL

-- name: bench_same_work_populate :count
-- Benchmark, the same work with no job around it: one INSERT ... SELECT of every membership of
-- the targets with its snapshot from the snapshot function.
INSERT INTO target_populations (target_band_id, me_file_id, matching_tags_snapshot)
SELECT s.band_id, s.me_file_id, s.snapshot
FROM (SELECT array_agg(me_file_id) AS m, array_agg(band_id) AS b FROM qlarius_band_memberships
      WHERE target_id = ANY(%(target_ids)s::bigint[])) pairs,
     qlarius_matching_tags_snapshots(pairs.m, pairs.b) s

-- name: bench_compute_null_population_snapshots :one
-- Benchmark: the snapshots of every NULL population computed and not written (what the same
-- work's UPDATE spends computing; the rest of it is writing). Their bytes are summed: a bare
-- count(*) lets the planner skip building the JSON (a third of the computation).
SELECT count(*) AS n, sum(pg_column_size(s.snapshot)) AS bytes
FROM (SELECT array_agg(me_file_id) AS m, array_agg(target_band_id) AS b
      FROM target_populations WHERE matching_tags_snapshot IS NULL) pairs,
     qlarius_matching_tags_snapshots(pairs.m, pairs.b) s

-- name: bench_backfill_phase_ms :one
-- Benchmark: where the last backfill run's time went, by phase (backfill_phases.py).
SELECT phase_ms FROM backfill_runs ORDER BY id DESC LIMIT 1

-- name: bench_memberships_only :one
-- Benchmark: the targets' band memberships alone (no snapshot, nothing written).
SELECT count(*) AS n FROM qlarius_band_memberships WHERE target_id = ANY(%(target_ids)s::bigint[])

-- name: bench_memberships_with_snapshots :one
-- Benchmark: the targets' band memberships and their snapshots, computed, nothing written
-- (their bytes summed, so that the JSON is really built: see above).
SELECT count(*) AS n, sum(pg_column_size(s.snapshot)) AS bytes
FROM (SELECT array_agg(me_file_id) AS m, array_agg(band_id) AS b FROM qlarius_band_memberships
      WHERE target_id = ANY(%(target_ids)s::bigint[])) pairs,
     qlarius_matching_tags_snapshots(pairs.m, pairs.b) s

-- name: bench_jobs_fill :count
-- The job-table benchmark (job_table.py): %(jobs)s finished jobs, deferred one after the other
-- over %(days)s days (ids follow time, as in production), most of them succeeded, 3% failed
-- (three attempts), 1% cancelled, 2% another application's (its own task and queue). The first
-- %(old)s were deferred before %(old_before_days)s days ago, the others after: those are what
-- the prune row deletes. Our insert trigger derives locks as for any deferral.
INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts)
SELECT CASE WHEN mod(n, 50) = 7 THEN 'their_queue' ELSE (ARRAY['default', 'targets', 'offers', 'maintenance'])[1 + mod(n, 4)] END,
       CASE WHEN mod(n, 50) = 7 THEN 'their_app.send_email'
            ELSE (ARRAY['create_initial_pending_offers', 'sync_pending_me_files',
                        'reconcile_pending_offers', 'backfill_snapshot_chunk'])[1 + mod(n, 4)] END,
       jsonb_build_object('n', n, 'me_file_id', mod(n, 100000)),
       (CASE WHEN mod(n, 100) < 3 THEN 'failed' WHEN mod(n, 100) = 3 THEN 'cancelled'
             ELSE 'succeeded' END)::procrastinate_job_status,
       CASE WHEN mod(n, 100) < 3 THEN 3 WHEN mod(n, 100) = 3 THEN 0 ELSE 1 END
FROM generate_series(1, %(jobs)s) n

-- name: bench_jobs_fill_drop_keys :exec
-- The fill writes tens of millions of rows that point at their job: checked one row at a time
-- (a lock on the job's row each), their foreign keys would take most of the fill. Dropped
-- here in the benchmark's own database, and added back, the same, after the rows are in
-- (bench_jobs_fill_restore_keys), which checks them all at once.
ALTER TABLE procrastinate_events DROP CONSTRAINT procrastinate_events_job_id_fkey;
ALTER TABLE qlarius_job_errors DROP CONSTRAINT qlarius_job_errors_job_id_fkey;
ALTER TABLE qlarius_job_results DROP CONSTRAINT qlarius_job_results_job_id_fkey

-- name: bench_jobs_fill_restore_keys :exec
ALTER TABLE procrastinate_events ADD CONSTRAINT procrastinate_events_job_id_fkey
    FOREIGN KEY (job_id) REFERENCES procrastinate_jobs (id) ON DELETE CASCADE;
ALTER TABLE qlarius_job_errors ADD CONSTRAINT qlarius_job_errors_job_id_fkey
    FOREIGN KEY (job_id) REFERENCES procrastinate_jobs (id) ON DELETE CASCADE;
ALTER TABLE qlarius_job_results ADD CONSTRAINT qlarius_job_results_job_id_fkey
    FOREIGN KEY (job_id) REFERENCES procrastinate_jobs (id) ON DELETE CASCADE

-- name: bench_jobs_fill_events :count
-- Each filled job's events, at the time its place in the id order gives it: deferred, then
-- (unless cancelled before it started) started and its end; a failed job's three attempts.
WITH bounds AS (
    SELECT min(id) AS first, max(id) AS last FROM procrastinate_jobs
    WHERE status IN ('succeeded', 'failed', 'cancelled')
), timed AS (
    SELECT j.id, j.status,
           CASE WHEN j.id - b.first < %(old)s
                THEN now() - make_interval(days => %(days)s)
                     + (j.id - b.first) * (make_interval(days => %(days)s - %(old_before_days)s) - interval '1 hour')
                       / GREATEST(%(old)s, 1)
                ELSE now() - make_interval(days => %(old_before_days)s) + interval '1 hour'
                     + (j.id - b.first - %(old)s) * (make_interval(days => %(old_before_days)s) - interval '2 hours')
                       / GREATEST(b.last - b.first + 1 - %(old)s, 1)
           END AS deferred_at
    FROM procrastinate_jobs j, bounds b
    WHERE j.id BETWEEN b.first AND b.last AND j.status IN ('succeeded', 'failed', 'cancelled')
)
INSERT INTO procrastinate_events (job_id, type, at)
SELECT t.id, e.type::procrastinate_job_event_type, t.deferred_at + e.after
FROM timed t
CROSS JOIN LATERAL (VALUES ('deferred', interval '0'),
                           ('started', interval '2 seconds'),
                           ('retried', interval '3 seconds'),
                           ('started', interval '30 seconds'),
                           ('retried', interval '31 seconds'),
                           ('started', interval '90 seconds'),
                           ('failed', interval '91 seconds'),
                           ('succeeded', interval '3 seconds'),
                           ('cancelled', interval '5 seconds')) AS e(type, after)
WHERE CASE t.status
          WHEN 'succeeded' THEN e.type IN ('deferred', 'succeeded') OR (e.type = 'started' AND e.after = interval '2 seconds')
          WHEN 'failed' THEN e.type NOT IN ('succeeded', 'cancelled')
          ELSE e.type IN ('deferred', 'cancelled') END

-- name: bench_jobs_fill_side_tables :one
-- What our jobs leave beside them: a failed job's three errors, a succeeded job's counts.
-- (After an ANALYZE: the lateral read of a job's events plans as a scan of the whole table
-- while the statistics still say it is empty.)
WITH errors AS (
    INSERT INTO qlarius_job_errors (job_id, task_name, attempt, at, error_type, message)
    SELECT j.id, j.task_name, a, e.at, 'RuntimeError', 'the benchmark''s failure, attempt ' || a
    FROM procrastinate_jobs j
    CROSS JOIN generate_series(1, 3) a
    JOIN LATERAL (SELECT min(at) AS at FROM procrastinate_events ev WHERE ev.job_id = j.id) e ON true
    WHERE j.status = 'failed' AND qlarius_owns_job(j.task_name, j.queue_name)
    RETURNING 1
), results AS (
    INSERT INTO qlarius_job_results (job_id, counts, recorded_at)
    SELECT j.id, jsonb_build_object('applied', mod(j.id, 1000), 'batches', 1), now()
    FROM procrastinate_jobs j
    WHERE j.status = 'succeeded' AND qlarius_owns_job(j.task_name, j.queue_name)
    RETURNING 1
)
SELECT (SELECT count(*) FROM errors) + (SELECT count(*) FROM results) AS n

-- name: bench_jobs_analyze :exec
ANALYZE procrastinate_jobs, procrastinate_events

-- name: bench_jobs_vacuum :exec
-- After the fill: what autovacuum would have done over weeks (statistics, the visibility map
-- that index-only scans read).
VACUUM ANALYZE procrastinate_jobs, procrastinate_events, qlarius_job_errors, qlarius_job_results

-- name: bench_jobs_table_size :one
SELECT pg_total_relation_size('procrastinate_jobs') + pg_total_relation_size('procrastinate_events')
       + pg_total_relation_size('qlarius_job_errors') + pg_total_relation_size('qlarius_job_results')
       AS bytes

-- name: bench_jobs_finished :one
-- The filled jobs still there (the no-op jobs and the prune's own job left out).
SELECT count(*) AS n FROM procrastinate_jobs
WHERE status IN ('succeeded', 'failed', 'cancelled')
  AND task_name NOT IN ('bench_noop', 'prune_finished_jobs')
