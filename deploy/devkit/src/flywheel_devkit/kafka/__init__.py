"""Run a local single-node Apache Kafka 4.1 broker without Docker.

The broker is the real Apache Kafka (``kafka_2.13:4.1.1``) in KRaft combined mode
(one JVM that is both broker and controller). Its jars are resolved once from Maven
Central with ``mvn`` (see ``deploy/kafka/pom.xml``) into a cache directory that is
shared by every data directory and every CI re-run.

Modules: :mod:`.maven` (jars and java), :mod:`.probe` (ports, readiness),
:mod:`.security` and :mod:`.secured` (SCRAM, TLS), :mod:`.state` (the data directory),
:mod:`.config` (generated files, storage format), :mod:`.broker` (:class:`LocalKafka`),
:mod:`.cli` (the command line).

Layout of a data directory (it survives broker restarts)::

    <data_dir>/server.properties   regenerated on every start
    <data_dir>/log4j2.properties   regenerated on every start
    <data_dir>/logs/               log.dirs: KRaft metadata + topic data (+ cluster id)
    <data_dir>/broker.log          broker stdout/stderr, appended across restarts
    <data_dir>/broker.pid          pid of the running broker
    <data_dir>/devkafka.json       ports and pid, so another process can stop/inspect it
    <data_dir>/security/           only with security: ca.pem (clients verify with it), the
                                   broker's keystore, and secrets.json (keystore and broker
                                   passwords); mode 0700

Command line::

    python -m flywheel_devkit.kafka start [--port 9092] [--data-dir .flywheel/kafka]
    python -m flywheel_devkit.kafka start --foreground    # Ctrl-C stops the broker
    python -m flywheel_devkit.kafka start --sasl-scram alice:secret --tls   # SASL_SSL
    python -m flywheel_devkit.kafka status | stop | restart

Security (:class:`KafkaSecurity`, off by default): the client listener can require
SASL/SCRAM-SHA-512 (users created when the storage is first formatted), TLS (a certificate for
127.0.0.1/localhost from a throwaway CA generated in ``<data_dir>/security/``), or both
(``SASL_SSL``). Brokers talk to each other on that same listener as the internal SCRAM user
``devkafka-broker``; only the KRaft controller listener stays PLAINTEXT on 127.0.0.1. No
authorizer runs: every authenticated user may do everything.

Environment: ``FLYWHEEL_KAFKA_CACHE`` (jar cache, default ``~/.cache/flywheel/kafka``),
``FLYWHEEL_KAFKA_POM`` (pom to resolve, default the repo's ``deploy/kafka/pom.xml``),
``FLYWHEEL_KAFKA_JVM_OPTS`` (extra JVM flags), ``FLYWHEEL_KAFKA_CDS=0`` (disable the
class-data-sharing archive that makes warm starts ~1 s faster).
"""

from .broker import LocalKafka
from .maven import (
    KAFKA_VERSION,
    KafkaStartError,
    default_cache_dir,
    default_data_dir,
    find_pom,
    resolve_jars,
)
from .probe import pick_free_port, wait_for_kafka
from .security import SCRAM_MECHANISM, KafkaSecurity, parse_scram_user

__all__ = [
    "KAFKA_VERSION",
    "SCRAM_MECHANISM",
    "KafkaSecurity",
    "KafkaStartError",
    "LocalKafka",
    "default_cache_dir",
    "default_data_dir",
    "find_pom",
    "parse_scram_user",
    "pick_free_port",
    "resolve_jars",
    "wait_for_kafka",
]
