"""Models: splits, baselines, ALS and the item-item family, top-N scoring, fold-in, id maps,
evaluation, the report, promotion, training and tuning.

Depends on ``recspark.core`` only; ``recspark.serve`` builds on it.
"""
