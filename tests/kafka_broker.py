"""A real, single-node Apache Kafka broker for tests: KRaft mode, run with ``java`` from Maven jars.

The broker's classpath (``kafka_2.13`` and its runtime dependencies, plus ``kafka-tools`` for
``TopicCommand``) is fetched once per machine with ``mvn dependency:copy-dependencies`` into
``~/.cache/recspark-kafka/<version>/lib`` (``RECSPARK_KAFKA_CACHE`` moves the cache). Each
broker runs as one combined broker+controller process on 127.0.0.1 with free ports and a
temporary log directory, formatted with a random cluster id.

Every step is bounded by a timeout and raises :class:`BrokerUnavailable` (with the tail of the
broker's log) when the machine cannot run a broker, so a test can skip instead of hanging.

Pre-fetch the jars with ``python -m tests.kafka_broker --fetch``; ``--run`` starts a broker and
keeps it up until Ctrl-C (for poking at it by hand).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.processes import free_port

# The broker matches the kafka-clients that Spark 4.2's spark-sql-kafka-0-10_2.13 connector
# depends on (3.9.2), so the test exercises exactly the client/broker pair of a current
# deployment. Kafka 3.9 runs KRaft-only nodes and supports Java 11/17/21.
KAFKA_VERSION = "3.9.2"
SCALA_BINARY = "2.13"
# Without these, kafka-tools drags Kafka Connect's REST server (Jetty, Jersey: ~40 MB) in.
_TOOLS_EXCLUSIONS = (
    ("org.apache.kafka", "connect-runtime"),
    ("com.fasterxml.jackson.jaxrs", "jackson-jaxrs-json-provider"),
)
FETCH_TIMEOUT_SECONDS = 900.0
JVM_OPTIONS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BrokerUnavailable(RuntimeError):
    """This machine cannot run a Kafka broker now (no Java or Maven, jars unreachable, ...)."""


def cache_dir(version: str = KAFKA_VERSION) -> Path:
    root = os.environ.get("RECSPARK_KAFKA_CACHE") or Path.home() / ".cache" / "recspark-kafka"
    return Path(root) / version


def _pom(version: str) -> str:
    exclusions = "".join(
        f"<exclusion><groupId>{g}</groupId><artifactId>{a}</artifactId></exclusion>"
        for g, a in _TOOLS_EXCLUSIONS
    )
    dependencies = [
        f"<groupId>org.apache.kafka</groupId><artifactId>kafka_{SCALA_BINARY}</artifactId>"
        f"<version>{version}</version>",
        f"<groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId>"
        f"<version>{version}</version><exclusions>{exclusions}</exclusions>",
        # Kafka 3.x logs through SLF4J 1.7; this binding writes the broker's log file.
        "<groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version>",
    ]
    body = "".join(f"<dependency>{d}</dependency>" for d in dependencies)
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>local.recspark</groupId><artifactId>kafka-broker-classpath</artifactId>"
        f"<version>{version}</version><packaging>pom</packaging>"
        f"<dependencies>{body}</dependencies></project>\n"
    )


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def broker_classpath(version: str = KAFKA_VERSION, timeout: float = FETCH_TIMEOUT_SECONDS) -> str:
    """The broker's Java classpath, fetching the jars with Maven the first time on this machine."""
    if shutil.which("java") is None:
        raise BrokerUnavailable("no `java` on PATH")
    home = cache_dir(version)
    lib, done = home / "lib", home / ".complete"
    if done.is_file():
        return f"{lib}/*"
    if shutil.which("mvn") is None:
        raise BrokerUnavailable(f"Kafka jars not in {home} and no `mvn` on PATH to fetch them")
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be fetching the same jars
        if done.is_file():
            return f"{lib}/*"
        (home / "pom.xml").write_text(_pom(version))
        staging = home / "lib.partial"
        shutil.rmtree(staging, ignore_errors=True)
        command = [
            "mvn",
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(home / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        started = time.monotonic()
        try:
            fetched = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise BrokerUnavailable(f"fetching Kafka {version} jars took over {timeout:.0f}s") from exc
        if fetched.returncode != 0:
            output = _ANSI.sub("", fetched.stdout + fetched.stderr).strip()[-2000:]
            raise BrokerUnavailable(f"could not fetch Kafka {version} jars with Maven:\n{output}")
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)
        done.write_text(f"fetched in {time.monotonic() - started:.1f}s\n")
        print(f"[kafka] fetched Kafka {version} jars into {lib} in {time.monotonic() - started:.1f}s")
    return f"{lib}/*"


def _cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 (not starting with '-', as Kafka's)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


class KafkaBroker:
    """One KRaft broker+controller process; use as a context manager or call start()/stop()."""

    def __init__(self, workdir: Path, classpath: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.classpath = classpath
        self.port = 0
        self.controller_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "broker.log"

    def _java(self, main: str, *args: str, log4j: str = "tools-log4j.properties") -> list[str]:
        assert self.classpath is not None
        return [
            "java",
            *JVM_OPTIONS,
            f"-Dlog4j.configuration=file:{self.workdir / log4j}",
            "-cp",
            self.classpath,
            main,
            *args,
        ]

    def _write_config(self) -> Path:
        self.port, self.controller_port = free_port(), free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        data = self.workdir / "data"
        shutil.rmtree(data, ignore_errors=True)
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "log.cleaner.enable": "false",
        }
        properties = self.workdir / "server.properties"
        properties.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        (self.workdir / "broker-log4j.properties").write_text(
            "log4j.rootLogger=INFO, file\n"
            "log4j.appender.file=org.apache.log4j.FileAppender\n"
            f"log4j.appender.file.File={self.log_file}\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        )
        (self.workdir / "tools-log4j.properties").write_text(
            "log4j.rootLogger=WARN, stderr\n"
            "log4j.appender.stderr=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stderr.Target=System.err\n"
            "log4j.appender.stderr.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        )
        return properties

    def _run_tool(self, main: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(self._java(main, *args), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise BrokerUnavailable(f"{main} {' '.join(args[:2])} took over {timeout:.0f}s") from exc

    def start(self, timeout: float = 60.0) -> KafkaBroker:
        """Format a fresh log directory, start the broker and wait until it accepts connections."""
        if self.classpath is None:
            self.classpath = broker_classpath()
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        deadline = started + timeout
        properties = self._write_config()
        formatted = self._run_tool(
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "--cluster-id",
            _cluster_id(),
            "--config",
            str(properties),
            timeout=max(deadline - time.monotonic(), 1.0),
        )
        if formatted.returncode != 0:
            raise BrokerUnavailable(
                f"kafka-storage format failed:\n{(formatted.stdout + formatted.stderr)[-2000:]}"
            )
        with open(self.workdir / "broker.out", "wb") as out:
            self.process = subprocess.Popen(
                self._java("kafka.Kafka", str(properties), log4j="broker-log4j.properties"),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C hits pytest only; teardown or atexit stops us
            )
        atexit.register(self.stop)
        while True:
            if self.process.poll() is not None:
                raise BrokerUnavailable(
                    f"Kafka broker exited with code {self.process.returncode}:\n{self._logs()}"
                )
            if _port_open(self.port):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerUnavailable(f"Kafka broker not listening after {timeout:.0f}s:\n{self._logs()}")
            time.sleep(0.2)
        self.startup_seconds = round(time.monotonic() - started, 1)
        return self

    def _logs(self) -> str:
        return (_tail(self.workdir / "broker.out", 10) + "\n" + _tail(self.log_file)).strip()

    def create_topic(self, topic: str, partitions: int = 1, timeout: float = 60.0) -> None:
        """Create a topic; the first success also proves the broker is fully up (KRaft leader
        elected, broker registered), so retry until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            created = self._run_tool(
                "org.apache.kafka.tools.TopicCommand",
                "--bootstrap-server",
                self.bootstrap_servers,
                "--create",
                "--if-not-exists",
                "--topic",
                topic,
                "--partitions",
                str(partitions),
                "--replication-factor",
                "1",
                timeout=max(remaining, 1.0),
            )
            if created.returncode == 0:
                return
            if self.process is not None and self.process.poll() is not None:
                raise BrokerUnavailable(f"Kafka broker died:\n{self._logs()}")
            if time.monotonic() + 1.0 > deadline:
                raise BrokerUnavailable(
                    f"could not create topic {topic!r} within {timeout:.0f}s:\n"
                    f"{(created.stdout + created.stderr)[-1500:]}\n{self._logs()}"
                )
            time.sleep(1.0)

    def stop(self, timeout: float = 20.0) -> None:
        """Shut the broker down (SIGTERM: a controlled shutdown), killing it if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    if "--fetch" in argv:
        print(broker_classpath())
    if "--run" in argv:
        import tempfile

        with (
            tempfile.TemporaryDirectory(prefix="recspark-kafka-") as workdir,
            KafkaBroker(Path(workdir)) as broker,
        ):
            print(f"Kafka {KAFKA_VERSION} at {broker.bootstrap_servers} (logs {broker.log_file})")
            with contextlib.suppress(KeyboardInterrupt):
                while broker.process is not None and broker.process.poll() is None:
                    time.sleep(1)
    if not {"--fetch", "--run"} & set(argv):
        print("usage: python -m tests.kafka_broker [--fetch] [--run]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
