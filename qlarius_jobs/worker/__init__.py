"""The worker runtime, given its App: worker processes (runner), the job managers (managers:
our doors; resilience: riding out a lost database), wake-ups for pending work, the
error-history middleware, and the one adapter through which anything reaches Procrastinate's
internals. The jobs themselves are defined in ``jobs/``."""
