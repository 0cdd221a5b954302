"""The on-call status report (``recspark status``).

:func:`~recspark.ops.status.snapshot.gather_status` reads every section once, a module each:
table freshness (:mod:`.tables`), the champion model and the newest promotion decision
(:mod:`.champion`), the newest job runs (:mod:`.job_runs`, from ``job_runs``, written by
:mod:`recspark.ops.runs`), the quality gates (:mod:`.quality_gates`), the catalog's malformed
lines (:mod:`.catalog`) and the outcomes of served lists (:mod:`.outcomes`);
:mod:`.text_report` shows the snapshot to a person, :mod:`.json_report` to a monitoring system.
"""
