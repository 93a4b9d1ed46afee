DELETE FROM procrastinate_jobs WHERE status NOT IN ('todo', 'doing')
