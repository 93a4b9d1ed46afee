-- The targets a MeFile sync covers. 'populating' ones are included so that a sync waits for a
-- populate in flight (whose snapshot may predate the tag change) and then corrects it.
SELECT id FROM targets
WHERE population_status IN ('populated', 'populating')
ORDER BY id
FOR SHARE
