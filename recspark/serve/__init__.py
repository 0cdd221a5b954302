"""Serving: candidates, assembling each user's list, similar items, the full publish and the
streaming refresh of active users.

Depends on ``recspark.model`` and ``recspark.core``.
"""
