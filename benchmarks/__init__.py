"""asv benchmarks of l2obench (run: ``asv run --python=same --quick``)."""
