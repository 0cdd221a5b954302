"""Data to run recspark on without a shop: a synthetic shop (catalog and event files), trusted
histories loaded straight into a lake, and synthetic lakes of a chosen size for benchmarks.

Entry points, the demo, tests and benchmarks use it; no stage does."""
