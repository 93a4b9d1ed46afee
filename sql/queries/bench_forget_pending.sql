-- Benchmark: the floor applies changes directly; drop the pending rows they recorded.
DELETE FROM qlarius_pending_syncs
