"""The database: which one (connection), its schema (migrate, ``sql/migrations/``), named
queries (``sql/queries/``)."""
