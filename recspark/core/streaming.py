"""What every recspark streaming query shares: its trigger, its Delta transaction id, its end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from recspark.core.hadoop_files import hadoop_file
from recspark.core.secrets import redact


def start_query(stream: DataStreamWriter, once: bool, trigger_seconds: float) -> StreamingQuery:
    """``once``: process what is available now in bounded batches, then stop (cron, Airflow);
    otherwise a micro-batch every ``trigger_seconds`` until stopped."""
    if once:
        return stream.trigger(availableNow=True).start()
    return stream.trigger(processingTime=f"{trigger_seconds} seconds").start()


def await_query(query: StreamingQuery, job: str) -> None:
    """Block until the query ends; a failed query fails the job with a ``RuntimeError`` quoting the
    failure (a batch function's whole Python traceback, through py4j) with credentials redacted."""
    try:
        query.awaitTermination()
    except StreamingQueryException as exc:  # how pyspark reports a failed query
        failure: object = exc
    else:
        failure = query.exception()
        if failure is None:
            return
    raise RuntimeError(redact(f"{job} query failed: {failure}"))


def checkpoint_has_offsets(spark: SparkSession, checkpoint: str) -> bool:
    """Whether a query has planned a batch under ``checkpoint`` (its offset log is not empty):
    then it resumes there, and a source's starting options must not be given. Delta starts a
    resumed query whose log holds one batch at its ``startingVersion`` option, not at the
    checkpoint, so an option computed afresh can lie past that batch's end."""
    fs, offsets = hadoop_file(spark, f"{checkpoint}/offsets")
    return bool(fs.exists(offsets)) and any(
        status.getPath().getName().isdigit() for status in fs.listStatus(offsets)
    )


def streaming_app_id(spark: SparkSession, checkpoint: str, job: str) -> str:
    """A Delta ``txnAppId`` for a streaming query: its id from the checkpoint's metadata, so it
    is stable across restarts and new when the checkpoint is deleted (then Delta must not
    mistake the fresh query's batch 0 for a replay of the old one)."""
    metadata = spark.read.text(f"{checkpoint}/metadata").first()
    if metadata is None:
        raise RuntimeError(f"streaming checkpoint {checkpoint} has no metadata")
    return f"recspark-{job}-{json.loads(metadata[0])['id']}"


@contextmanager
def commit_user_metadata(spark: SparkSession, text: str | None) -> Iterator[None]:
    """Stamp the Delta commits made inside (MERGE included) with ``text`` (``userMetadata``)."""
    key = "spark.databricks.delta.commitInfo.userMetadata"
    if text is None:
        yield
        return
    spark.conf.set(key, text)
    try:
        yield
    finally:
        spark.conf.unset(key)


@contextmanager
def idempotent_session_writes(spark: SparkSession, app_id: str, version: int) -> Iterator[None]:
    """Make the DML inside (MERGE) a no-op if this (app_id, version) already committed."""
    spark.conf.set("spark.databricks.delta.write.txnAppId", app_id)
    spark.conf.set("spark.databricks.delta.write.txnVersion", str(version))
    try:
        yield
    finally:
        spark.conf.unset("spark.databricks.delta.write.txnAppId")
        spark.conf.unset("spark.databricks.delta.write.txnVersion")


def append_idempotent(frame: DataFrame, path: str, app_id: str, version: int) -> None:
    """Append ``frame`` to the Delta table at ``path`` unless (``app_id``, ``version``) already
    committed there (Delta's ``txnAppId``/``txnVersion``)."""
    frame.write.format("delta").mode("append").option("txnAppId", app_id).option("txnVersion", version).save(
        path
    )
