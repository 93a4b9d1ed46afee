-- Give an offer with a NULL snapshot the one computed for its ad event, unless a job is
-- writing that offer right now (then the job's own value lands; nothing waits).
UPDATE offers SET matching_tags_snapshot = %(snapshot)s, updated_at = now()
WHERE id = (SELECT id FROM offers
            WHERE id = %(offer_id)s AND matching_tags_snapshot IS NULL
            FOR NO KEY UPDATE SKIP LOCKED)
