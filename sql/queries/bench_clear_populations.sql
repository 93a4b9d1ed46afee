-- Benchmark: empty the targets' populations (and mark them not populated) before a populate.
WITH cleared AS (
    DELETE FROM target_populations tp USING target_bands b
    WHERE b.id = tp.target_band_id AND b.target_id = ANY(%(target_ids)s::bigint[])
)
UPDATE targets SET population_status = 'not_populated' WHERE id = ANY(%(target_ids)s::bigint[])
