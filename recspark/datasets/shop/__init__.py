"""The synthetic shop: a catalog plus a stream of JSON-lines event files.

The data follows a plain generative story rather than being tuned to any model: users have
stable hidden tastes (a Dirichlet preference over a few categories plus a latent vector matched
against item vectors), item popularity is long-tailed, and sessions walk a view -> cart ->
purchase -> rating funnel whose conversion rises with affinity. Because tastes are stable, history
predicts the future, so a collaborative-filtering model can beat "most popular" on a time-based
holdout. Ingestion noise (broken lines, producer retries) is added on top so the streaming
ingestion stage has something real to clean.

Everything is driven by one ``numpy.random.default_rng(spec.seed)`` and vectorised, so the same
spec writes byte-identical files and a million events take seconds. The parts, in the order the
generator draws from that one stream: ``spec`` (the size, window and seed; ids), ``world`` (the
hidden tastes and shelf life), ``catalog``, ``sessions`` (one batch of sessions and their funnel),
``events`` (sessions thinned to the event budget, in time order) and ``files`` (the catalog and
event files with ingestion noise).
"""
