"""Benchmarks (``qlarius-jobs bench``), outside the job runtime: nothing in it imports them."""
