SELECT rolsuper AS superuser FROM pg_roles WHERE rolname = current_user
