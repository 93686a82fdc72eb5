"""A single-node Apache Kafka 4.x broker in KRaft combined mode, run from Maven Central jars.

Why not the release tarball: Tessera's machines reach package registries only, so the
broker's runtime classpath is resolved by Maven from ``infra/kafka/pom.xml``.

Lifecycle (all idempotent):

* ``ensure_jars()``  resolve the classpath once (``mvn dependency:copy-dependencies``).
* ``start()``        write ``server.properties``, format the log dir once, launch the JVM
                     detached (it outlives the CLI), wait until the client port accepts.
* ``status()``       what is true now: running (pid alive, port open), stale, or stopped.
* ``stop()``         SIGTERM for a controlled shutdown, SIGKILL after a grace period.

The broker opens its client listener only after it registered and was unfenced, so a
port that accepts a TCP connection means the broker is ready for clients.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .acl_policy import ROLES, acl_lines
from .tls import issue, make_authority

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
LIB_DIR = POM.parent / "target" / "lib"
#: SHA-256 of every jar of the broker classpath, as resolved and reviewed for this pom.
CHECKSUMS = POM.parent / "jars.sha256"


class BrokerError(RuntimeError):
    """The broker could not be prepared, started or stopped; the message says what to do."""


@dataclass(frozen=True)
class BrokerStatus:
    state: str  # "running", "external", "stale" or "stopped"
    bootstrap: str
    pid: int | None
    home: Path

    @property
    def running(self) -> bool:
        return self.state in {"running", "external"}

    def describe(self) -> str:
        if self.state == "running":
            return f"Kafka is running (pid {self.pid}) on {self.bootstrap}; data in {self.home}"
        if self.state == "external":
            return (f"something this data directory ({self.home}) did not start answers on {self.bootstrap}; "
                    "`tessera infra up` will not use it (set TESSERA_KAFKA_BOOTSTRAP to use it)")
        if self.state == "stale":
            return f"Kafka is not running; pid file for pid {self.pid} is stale (run `tessera infra up`)"
        return f"Kafka is not running (expected on {self.bootstrap}; run `tessera infra up`)"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def java_major_version() -> int:
    """The major version of the ``java`` on PATH (Kafka 4.x needs 17 or newer)."""
    if shutil.which("java") is None:
        raise BrokerError("Java (`java`) is not on PATH; Kafka 4.x needs Java 17 or newer (e.g. apt-get install "
                          "openjdk-17-jre-headless)")
    out = subprocess.run(["java", "-version"], capture_output=True, text=True)
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        raise BrokerError(f"cannot tell the Java version from `java -version`: {(out.stderr or out.stdout)[:200]!r}")
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major     # "1.8" is Java 8


def ensure_jars(progress: Callable[[str], None] = lambda _m: None) -> Path:
    """Resolve the broker classpath with Maven (cached in ~/.m2 and infra/kafka/target/lib),
    and check every jar against the SHA-256 list recorded in the repository.

    Maven runs with strict checksums (a jar whose checksum from the repository does not
    match fails the build). The jar set is resolved again whenever ``pom.xml`` changes
    (another ``kafka.version``), and the broker is not started from jars that differ from
    ``infra/kafka/jars.sha256`` in any way."""
    major = java_major_version()
    if major < 17:
        raise BrokerError(f"Java {major} found; Kafka 4.x needs Java 17 or newer (set PATH or JAVA_HOME to one)")
    pom_hash = _sha256(POM)
    stamp = LIB_DIR / ".pom.sha256"
    fresh = LIB_DIR.is_dir() and stamp.is_file() and stamp.read_text().strip() == pom_hash
    if not fresh:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (`mvn`) is not on PATH; install Maven 3.8+ to fetch the Kafka jars")
        shutil.rmtree(LIB_DIR, ignore_errors=True)       # a changed pom: no stale jar may stay
        progress("resolving the Kafka broker jars from Maven Central (first run only) ...")
        proc = subprocess.run([mvn, "-B", "--strict-checksums", "-f", str(POM), "dependency:copy-dependencies"],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not any(LIB_DIR.glob("kafka_2.13-*.jar")):
            raise BrokerError("Maven could not resolve the Kafka jars:\n" + (proc.stdout + proc.stderr)[-2000:])
        stamp.write_text(pom_hash + "\n")
    verify_jars()
    return LIB_DIR


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def jar_checksums(lib: Path = LIB_DIR) -> dict[str, str]:
    return {p.name: _sha256(p) for p in sorted(lib.glob("*.jar"))}


def verify_jars(lib: Path = LIB_DIR, recorded: Path = CHECKSUMS) -> None:
    """Every jar the broker would load is exactly one recorded in ``recorded``."""
    want = dict(line.split()[::-1] for line in recorded.read_text().splitlines() if line.strip())
    have = jar_checksums(lib)
    problems = [f"{n}: not in the recorded list" for n in sorted(set(have) - set(want))]
    problems += [f"{n}: missing" for n in sorted(set(want) - set(have))]
    problems += [f"{n}: SHA-256 {have[n][:12]}... differs from the recorded {want[n][:12]}..."
                 for n in sorted(set(have) & set(want)) if have[n] != want[n]]
    if problems:
        raise BrokerError(f"the Kafka jars in {lib} differ from {recorded.name}: " + "; ".join(problems[:5])
                          + ". After a deliberate change of kafka.version, check the new jars and record them: "
                            "python -m tessera.infra.kafka_broker record-checksums")


def record_checksums(lib: Path = LIB_DIR, recorded: Path = CHECKSUMS) -> Path:
    recorded.write_text("".join(f"{digest}  {name}\n" for name, digest in jar_checksums(lib).items()))
    return recorded


class KafkaBroker:
    """One local broker+controller, its files under ``home``."""

    def __init__(
        self,
        home: Path,
        port: int = 9092,
        controller_port: int = 9093,
        heap: str = "512m",
        host: str = "127.0.0.1",
        sasl_port: int | None = None,
        sasl_users: dict[str, str] | None = None,
        secure: bool = False,
        ssl_port: int | None = None,
        topic_prefix: str = "tessera",
        app_id: str = "tessera",
        node_id: int = 1,
        voters: tuple[tuple[int, int], ...] = (),
        cluster_id: str = "",
    ) -> None:
        """``sasl_port`` + ``sasl_users`` add a SASL_PLAINTEXT (PLAIN) client listener
        with those username -> password pairs, beside the PLAINTEXT one.

        ``secure``: no plaintext listener at all. Clients connect with SASL_SSL and
        SCRAM-SHA-512 on ``port`` (users: Tessera's roles, passwords generated once into
        ``home/credentials.json``), or with TLS client certificates on ``ssl_port``; the
        controller listener takes only the broker's own certificate; a certificate
        authority made for this broker (``home/tls/ca.pem``) signs every certificate; an
        authorizer applies Tessera's ACLs (tessera.infra.acl_policy) for ``topic_prefix``
        and ``app_id``."""
        self.secure, self.ssl_port = secure, ssl_port
        self.topic_prefix, self.app_id = topic_prefix, app_id
        self.sasl_port = sasl_port
        self.sasl_users = dict(sasl_users or {})
        if self.sasl_port and not self.sasl_users:
            raise BrokerError("a SASL listener needs at least one user")
        self.home = Path(home)
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.host = host
        # A node of a KafkaCluster: its id, every controller's (node id, port) and the
        # cluster's id; alone, node 1 is its own single-voter quorum.
        self.node_id, self.voters, self.cluster_id = node_id, tuple(voters), cluster_id
        self.replication = 3 if len(self.voters) >= 3 else 1

    # -- files ---------------------------------------------------------------
    @property
    def log_dir(self) -> Path:
        return self.home / "data"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def tls_dir(self) -> Path:
        return self.home / "tls"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.pem"

    def credentials(self) -> dict[str, str]:
        """Role -> SCRAM password of a secure broker (made once, owner-readable only)."""
        path = self.home / "credentials.json"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({role: secrets.token_urlsafe(18) for role in ROLES}, indent=2))
            os.chmod(path, 0o600)
        return json.loads(path.read_text())

    def _secure_properties(self) -> list[str]:
        h, p, c = self.host, self.port, self.controller_port
        make_authority(self.tls_dir)
        me = issue(self.tls_dir, "tessera-broker")
        listeners = [f"SASL_SSL://{h}:{p}"] + ([f"SSL://{h}:{self.ssl_port}"] if self.ssl_port else [])
        return [
            f"listeners={','.join(listeners)},CONTROLLER://{h}:{c}",
            f"advertised.listeners={','.join(listeners)}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=" + ("SSL" if self.ssl_port else "SASL_SSL"),
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:SSL",
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.location={me.keystore_p12}",
            f"ssl.keystore.password={me.password}",
            f"ssl.key.password={me.password}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.ca_file}",
            # Certificates are required on the SSL and controller listeners (the principal is
            # the certificate's subject); on SASL_SSL the SCRAM user is the principal.
            "ssl.client.auth=required",
            "listener.name.sasl_ssl.ssl.client.auth=none",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram."
            f'ScramLoginModule required username="admin" password="{self.credentials()["admin"]}";',
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users=User:CN=tessera-broker;User:admin",
            "allow.everyone.if.no.acl.found=false",
        ]

    def _properties(self) -> str:
        h, p, c = self.host, self.port, self.controller_port
        listeners = [f"PLAINTEXT://{h}:{p}"]
        advertised = [f"PLAINTEXT://{h}:{p}"]
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        sasl: list[str] = []
        if self.sasl_port:
            listeners.append(f"SASL_PLAINTEXT://{h}:{self.sasl_port}")
            advertised.append(f"SASL_PLAINTEXT://{h}:{self.sasl_port}")
            protocols += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
            users = " ".join(f'user_{u}="{pw}"' for u, pw in self.sasl_users.items())
            sasl = [
                "sasl.enabled.mechanisms=PLAIN",
                "listener.name.sasl_plaintext.plain.sasl.jaas.config="
                "org.apache.kafka.common.security.plain.PlainLoginModule required " + users + ";",
            ]
        network = self._secure_properties() if self.secure else [
            f"listeners={','.join(listeners)},CONTROLLER://{h}:{c}",
            f"advertised.listeners={','.join(advertised)}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"listener.security.protocol.map={protocols}",
            *sasl,
        ]
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                *([f"controller.quorum.voters={','.join(f'{n}@{h}:{cp}' for n, cp in self.voters)}"]
                  if self.voters else [f"controller.quorum.bootstrap.servers={h}:{c}"]),
                *network,
                f"log.dirs={self.log_dir}",
                "num.partitions=6",
                # In a cluster every topic, the internal ones too, keeps 3 copies and takes a
                # write once 2 have it: one broker may fail without losing or refusing anything.
                f"default.replication.factor={self.replication}",
                f"min.insync.replicas={min(2, self.replication)}",
                f"offsets.topic.replication.factor={self.replication}",
                f"transaction.state.log.replication.factor={self.replication}",
                f"transaction.state.log.min.isr={min(2, self.replication)}",
                # KIP-890 part 1 verifies, before a transactional write, that the partition is
                # in the transaction. Clients without KIP-890 support (aiokafka) get a
                # retriable NOT_ENOUGH_REPLICAS while that check is in flight and retry after
                # 100 ms: measured here, transactions with offsets took p90 130 ms with it
                # and 18 ms without. Tessera's one transactional writer (the scheduler) adds
                # its partitions explicitly before its first send and is fenced by its
                # transactional id, so it is off on this broker.
                "transaction.partition.verification.enable=false",
                f"share.coordinator.state.topic.replication.factor={self.replication}",
                f"share.coordinator.state.topic.min.isr={min(2, self.replication)}",
                # Tests and the demo create consumer groups constantly; don't wait 3 s each.
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "log.retention.hours=168",
                "",
            ]
        )

    def _log4j_config(self) -> Path:
        cfg = self.home / "log4j2.properties"
        cfg.write_text(
            "\n".join(
                [
                    "status = warn",
                    "appender.file.type = File",
                    "appender.file.name = FILE",
                    f"appender.file.fileName = {self.log_file}",
                    "appender.file.layout.type = PatternLayout",
                    "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                    "rootLogger.level = info",
                    "rootLogger.appenderRef.file.ref = FILE",
                    "logger.kafka.name = kafka",
                    "logger.kafka.level = warn",
                    "logger.state.name = state.change.logger",
                    "logger.state.level = warn",
                    "logger.org.name = org.apache.kafka",
                    "logger.org.level = warn",
                    "",
                ]
            )
        )
        return cfg

    def _java(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        classpath = os.pathsep.join(str(j) for j in sorted(ensure_jars().glob("*.jar")))
        return [
            "java",
            f"-Xms{heap}" if heap == self.heap else "-Xms64m",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._log4j_config()}",
            "-cp",
            classpath,
            main,
            *args,
        ]

    def _format_once(self) -> None:
        if (self.log_dir / "meta.properties").exists():
            return
        cid = self.cluster_id or random_cluster_id(self)
        proc = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cid,
                "-c",
                str(self.properties_file),
                *([] if self.voters else ["--standalone"]),
                "-g",
                *[arg for role, pw in (self.credentials().items() if self.secure else ())
                  for arg in ("--add-scram", f"SCRAM-SHA-512=[name={role},password={pw}]")],
            ),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise BrokerError(f"formatting {self.log_dir} failed:\n{proc.stdout}{proc.stderr}")

    # -- lifecycle -----------------------------------------------------------
    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def status(self) -> BrokerStatus:
        pid = self._read_pid()
        alive = pid is not None and _pid_alive(pid)
        listening = port_open(self.host, self.port)
        if alive and listening:
            state = "running"
        elif listening:
            state = "external"
        elif pid is not None and not alive:
            state = "stale"
        elif alive:
            state = "running"  # started, not yet listening
        else:
            state = "stopped"
        return BrokerStatus(state, self.bootstrap, pid if alive or state == "stale" else None, self.home)

    def start(self, timeout: float = 90.0, progress: Callable[[str], None] = lambda _m: None) -> BrokerStatus:
        """Start the broker unless one already answers; return when clients can connect."""
        st = self.status()
        if st.state == "external":
            # Something this data directory did not start answers on the port: another
            # program, or another data directory's broker. Using it silently would mix
            # Tessera's topics into it (and `infra down` could not stop it).
            raise BrokerError(
                f"port {self.port} is taken by a process this data directory ({self.home}) did not start; stop "
                "it, or set TESSERA_KAFKA_PORT to a free port, or set TESSERA_KAFKA_BOOTSTRAP to use that broker"
            )
        if st.state == "running" and port_open(self.host, self.port):
            progress(f"reusing the broker on {self.bootstrap}")
            return st
        if st.state == "running":  # our JVM is up but still starting
            return self._wait_ready(st.pid, timeout, progress)
        if port_open(self.host, self.controller_port):
            raise BrokerError(
                f"port {self.controller_port} (controller) is taken by another process; "
                "set TESSERA_KAFKA_CONTROLLER_PORT to a free port"
            )
        proc = self.launch(progress)
        st = self._wait_ready(proc.pid, timeout, progress, proc)
        if self.secure:
            self._apply_acls(progress)
        return st

    def launch(self, progress: Callable[[str], None] = lambda _m: None) -> subprocess.Popen:
        """Write the configuration, format the storage once and start the JVM; return at
        once (a cluster's nodes must all be launched before any can elect a controller)."""
        ensure_jars(progress)
        self.home.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(self._properties())
        progress(f"formatting Kafka storage in {self.log_dir} (once)")
        self._format_once()
        progress(f"starting Kafka on {self.bootstrap} (heap {self.heap})")
        out = open(self.home / "broker.out", "ab")
        proc = subprocess.Popen(
            self._java("kafka.Kafka", str(self.properties_file), heap=self.heap),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlive `tessera infra up`
            close_fds=True,
        )
        self.pid_file.write_text(str(proc.pid))
        return proc

    def admin_properties(self) -> Path:
        """Java client properties for the admin role (SASL_SSL, SCRAM), for Kafka's tools."""
        path = self.home / "admin.properties"
        path.write_text("\n".join([
            f"bootstrap.servers={self.bootstrap}", "security.protocol=SASL_SSL", "sasl.mechanism=SCRAM-SHA-512",
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="admin" password="{self.credentials()["admin"]}";',
            "ssl.truststore.type=PEM", f"ssl.truststore.location={self.ca_file}", ""]))
        os.chmod(path, 0o600)
        return path

    def _apply_acls(self, progress: Callable[[str], None]) -> None:
        marker = self.home / "acls.applied"
        lines = acl_lines(self.topic_prefix, self.app_id)
        if marker.exists() and marker.read_text() == "\n".join(lines):
            return
        progress(f"applying {len(lines)} ACLs for Tessera's roles")
        proc = subprocess.run(self._java(str(POM.parent / "Acls.java"), str(self.admin_properties())),
                              input="\n".join(lines), capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise BrokerError("creating the ACLs failed:\n" + (proc.stdout + proc.stderr)[-2000:])
        marker.write_text("\n".join(lines))

    def _wait_ready(
        self,
        pid: int | None,
        timeout: float,
        progress: Callable[[str], None],
        proc: subprocess.Popen | None = None,
    ) -> BrokerStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_open(self.host, self.port):
                progress(f"Kafka is ready on {self.bootstrap}")
                return self.status()
            dead = proc.poll() is not None if proc is not None else (pid is None or not _pid_alive(pid))
            if dead:
                raise BrokerError(
                    f"Kafka exited while starting; see {self.home / 'broker.out'} and {self.log_file}:\n"
                    + self._tail()
                )
            time.sleep(0.25)
        raise BrokerError(f"Kafka did not open {self.bootstrap} within {timeout:.0f}s; see {self.log_file}")

    def _tail(self, n: int = 20) -> str:
        lines: list[str] = []
        for f in (self.home / "broker.out", self.log_file):
            if f.exists():
                lines += f.read_text(errors="replace").splitlines()[-n:]
        return "\n".join(lines)

    def stop(self, grace: float = 30.0, kill: bool = False) -> bool:
        """Stop the broker Tessera started (``kill``: SIGKILL at once, as a crash would).
        Returns False if none was running."""
        pid = self._read_pid()
        if pid is None or not _pid_alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return False
        try:
            os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.2)
        if _pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
            while _pid_alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def wipe(self) -> None:
        """Delete the broker's data (only when stopped)."""
        if self.status().state == "running":
            raise BrokerError("stop the broker before wiping its data")
        shutil.rmtree(self.home, ignore_errors=True)


def broker_from_settings(settings, secure: bool = False) -> KafkaBroker:  # noqa: ANN001 (avoid import cycle)
    """The local broker the settings describe; ``secure`` is the TLS + SCRAM + ACL one,
    with its own data directory (``kafka-secure``) and its TLS listener on the port after
    the controller's."""
    return KafkaBroker(
        home=settings.kafka_home.parent / "kafka-secure" if secure else settings.kafka_home,
        port=settings.kafka_port,
        controller_port=settings.kafka_controller_port,
        heap=settings.kafka_heap,
        secure=secure,
        ssl_port=settings.kafka_controller_port + 1 if secure else None,
        topic_prefix=settings.topic_prefix,
        app_id=settings.app_id,
    )


if __name__ == "__main__":
    # python -m tessera.infra.kafka_broker [HOME]        start a broker with defaults
    # python -m tessera.infra.kafka_broker record-checksums   after reviewing new jars
    if sys.argv[1:2] == ["record-checksums"]:
        print(record_checksums())
    else:
        b = KafkaBroker(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.home() / ".tessera" / "kafka")
        print(b.start(progress=print).describe())


def random_cluster_id(broker: KafkaBroker) -> str:
    out = subprocess.run(broker._java("kafka.tools.StorageTool", "random-uuid"), capture_output=True,
                         text=True).stdout.strip().splitlines()
    return out[-1] if out else uuid.uuid4().hex[:22]


class KafkaCluster:
    """``size`` brokers on loopback, each also a KRaft controller (a static quorum of all
    of them), under ``home/node-<id>``: replication factor 3 and ``min.insync.replicas`` 2
    for every topic, internal ones included, so one broker can fail, crash or restart
    without losing a committed record or refusing a write."""

    def __init__(self, home: Path, ports: list[int], controller_ports: list[int], heap: str = "384m") -> None:
        if len(ports) != len(controller_ports) or len(ports) < 3:
            raise BrokerError("a cluster needs at least 3 brokers, each with a client and a controller port")
        self.home = Path(home)
        voters = tuple((i + 1, cp) for i, cp in enumerate(controller_ports))
        id_file = self.home / "cluster.id"
        self.nodes = [KafkaBroker(self.home / f"node-{i + 1}", port=p, controller_port=cp, heap=heap,
                                  node_id=i + 1, voters=voters)
                      for i, (p, cp) in enumerate(zip(ports, controller_ports))]
        for node in self.nodes:
            node.home.mkdir(parents=True, exist_ok=True)
        if not id_file.exists():
            ensure_jars()
            id_file.write_text(random_cluster_id(self.nodes[0]))
        for node in self.nodes:
            node.cluster_id = id_file.read_text().strip()

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def start(self, timeout: float = 180.0, progress: Callable[[str], None] = lambda _m: None) -> str:
        """Start every node not running (all launched before any is waited for: a
        controller elects a leader only with a majority up); return the bootstrap list."""
        launched = [(n, n.launch(progress)) for n in self.nodes if n.status().state != "running"]
        for node, proc in launched:
            node._wait_ready(proc.pid, timeout, progress, proc)
        return self.bootstrap

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
