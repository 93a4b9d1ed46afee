-- Record pending work in {table} for several MeFiles at once (an audit's repairs).
INSERT INTO {table} (me_file_id) SELECT unnest(%(me_file_ids)s::bigint[])
