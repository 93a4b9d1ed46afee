-- Give one row of {table} a computed snapshot, unless it got one meanwhile.
UPDATE {table} SET matching_tags_snapshot = %(snapshot)s
WHERE id = %(id)s AND matching_tags_snapshot IS NULL
