"""Ingestion: parse the contract's event lines, plan a micro-batch, write it exactly once.

Depends on ``recspark.core`` only.
"""
