"""The lookup service for the website (``recspark api``): the served lists over HTTP, read with
delta-rs (no JVM), and what it logs: impressions."""

import os

# Memory a full read frees goes back to the system at once, not kept by an allocator for reuse:
# a read holds several times the table's in-memory size for a moment, and would otherwise stay
# resident for good. delta-rs allocates through jemalloc (configured by this variable), pyarrow
# through its default pool (mimalloc unless told otherwise). Both are read on first use, so
# they are set before either library is imported.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
