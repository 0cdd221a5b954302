"""Scoring: every user's top-N from a model's vectors or weights, in blocks bounded in memory.

``selection`` (pure NumPy) picks each row's best scores; ``columns`` moves rows between Arrow
and NumPy; ``factors`` brings item vectors to the driver; ``blocks`` scores catalogues too large
for one process block by block; ``als``, ``item_item`` and ``blend`` score each family, with
``weights`` holding the item-item weights they score with.
"""
