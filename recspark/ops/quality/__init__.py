"""Great Expectations quality gates on the Delta tables, recorded in ``quality_results``.

What each suite checks, and on which frame, is defined once per table in :mod:`.suites`;
:mod:`.ge_context` keeps the Great Expectations contexts that run them (one per process, and per
lake when Data Docs are written); :mod:`.validation` validates a frame and describes what failed;
:mod:`.gate` is what jobs call (:func:`~recspark.ops.quality.gate.run_gate`, ``gate_table``,
``gate_for``, ``check_tables``): validate, record the verdict (:mod:`.results_table`), refresh the
Data Docs and, per ``quality.on_failure``, stop the job with
:class:`~recspark.ops.quality.result.QualityGateError` or only log a warning.
"""
