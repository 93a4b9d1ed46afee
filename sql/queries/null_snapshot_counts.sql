-- The seed note's health check (the view lives in sql/monitoring.sql).
SELECT target_populations, offers, ad_events FROM qlarius_null_snapshot_counts
