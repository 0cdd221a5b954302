"""recspark: fresh top-N recommendations from a shop's event stream, on Spark, Delta and MLflow.

Stage packages, and the only direction their imports may take (checked by ``make lint``):

    serve -> model -> core        ingest -> core        ops -> core

``cli`` and ``demo`` sit on top and wire the stages together; ``packages`` names the JVM jars.
"""
