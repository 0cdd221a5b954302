"""The `train` job: read, tune, judge against the baselines and the champion, refit, log, and
promote on evidence (with its report)."""
