-- The safety net also looks for drift (not only NULLs): each backfill run audits a sample of
-- MeFiles against a fresh computation and counts what it found (and handed to the drains).
ALTER TABLE backfill_runs
    ADD COLUMN audited_me_files int NOT NULL DEFAULT 0,
    ADD COLUMN drifted_populations int NOT NULL DEFAULT 0,
    ADD COLUMN stale_snapshots int NOT NULL DEFAULT 0,
    ADD COLUMN offers_without_eligibility int NOT NULL DEFAULT 0,
    ADD COLUMN eligible_without_offer int NOT NULL DEFAULT 0,
    ADD COLUMN stale_offer_snapshots int NOT NULL DEFAULT 0;
