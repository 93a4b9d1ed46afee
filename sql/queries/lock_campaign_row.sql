-- The offers job keeps its campaign from being deleted while it runs, taken first.
SELECT id FROM campaigns WHERE id = %(campaign_id)s FOR KEY SHARE
