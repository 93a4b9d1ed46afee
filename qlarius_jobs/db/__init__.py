"""The database: which one (connection), its schema (migrate, migrations/), named queries."""
