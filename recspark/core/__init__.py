"""What every stage shares: the typed config, the contract's constants, the lake (table names,
schemas, paths), the one SparkSession builder, streaming helpers, the catalog reader, the
interaction-signal maths and the MLflow store with its champion alias.

Nothing here imports from the stage packages (``ingest``, ``model``, ``serve``, ``ops``).
"""
