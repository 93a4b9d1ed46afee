"""Operations: what operators look at (status; the console)."""
