"""Files that Spark's own file systems reach (local paths, ``file:``, ``s3a:``, ``abfss:``…),
read and written through the session's JVM, so a path works wherever the lake does."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession


def session_jvm(spark: SparkSession) -> Any:
    """The session's view of the JVM (py4j); there is none once the session has stopped."""
    jvm = spark.sparkContext._jvm
    if jvm is None:
        raise RuntimeError("the SparkSession has stopped: no JVM to read or write files with")
    return jvm


def hadoop_file(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """The Hadoop ``FileSystem`` that holds ``path``, and the path as a Hadoop ``Path``."""
    hadoop_path = session_jvm(spark).org.apache.hadoop.fs.Path(path)
    return hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hadoop_path
