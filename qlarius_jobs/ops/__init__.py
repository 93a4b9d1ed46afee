"""Operations: what operators look at and act with (status, job actions, the console, charts,
metrics)."""
