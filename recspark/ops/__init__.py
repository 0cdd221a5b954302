"""Operations: quality gates, job runs, the status report, table maintenance, the generator.

Depends on ``recspark.core`` only.
"""
