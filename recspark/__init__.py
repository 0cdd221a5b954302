"""recspark: fresh top-N recommendations from a shop's event stream, on Spark, Delta and MLflow.

Stage packages, and the only direction their imports may take (checked by ``make lint``):

    serve -> model -> core        ingest -> core        ops -> core

``jobs`` (the job registry) wires the stages into jobs; ``cli`` and ``demo`` sit on top and run
them; ``packages`` names the JVM jars.
"""
