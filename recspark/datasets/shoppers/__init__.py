"""Simulated shoppers for the lookup service: the synthetic shop's users, with the shop's hidden
tastes, ask the running service for their list over HTTP once a visit, for a number of simulated
days, and click, add to cart and buy what they are shown with known probabilities that rise with
their taste for each item. What they do lands in the landing folder as contract events carrying
the list's ``recommendation_id``, as a website would send them, so ingest attributes them.

The parts: ``tastes`` (the probabilities, from ``datasets.shop.world``), ``lookup_client`` (the
service over HTTP, bounded in time), ``simulation`` (the days, the events, the report). No Spark.
"""
