"""The worker runtime: worker processes (runner), riding out a lost database (resilience),
wake-ups for pending work, the error-history middleware, and the one adapter through which
anything reaches Procrastinate's internals. The jobs themselves are defined in ``jobs/``."""
