-- A MeFile's tags read from the index alone. The snapshot function reads (me_file_id,
-- trait_id, tag_value) of a batch of MeFiles; with tag_value in the (me_file_id, trait_id)
-- unique index that read is an index-only scan over one leaf page per MeFile, instead of one
-- heap page per tag (a MeFile's tags are written over time, so they lie on different pages).
-- Once the table outgrows shared_buffers those heap reads made a sync batch of 1,000 MeFiles
-- cost 2-3x more per MeFile at 200k MeFiles than at 20k; measured on the same batch at 200k:
-- 850-990 ms before, 320-390 ms after (README "Performance", make bench-scale).
-- The constraint keeps its name (ON CONFLICT ON CONSTRAINT still finds it) and its columns;
-- only its index gains the included column. Building it holds writes to me_file_tags for the
-- length of an index build (measured in README "Performance").
CREATE UNIQUE INDEX me_file_tags_me_file_trait_cover
    ON me_file_tags (me_file_id, trait_id) INCLUDE (tag_value);
ALTER TABLE me_file_tags DROP CONSTRAINT me_file_tags_me_file_trait_key;
ALTER TABLE me_file_tags
    ADD CONSTRAINT me_file_tags_me_file_trait_key UNIQUE USING INDEX me_file_tags_me_file_trait_cover;
