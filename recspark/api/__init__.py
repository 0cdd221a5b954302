"""The lookup service for the website (``recspark api``) and what it logs: impressions."""
