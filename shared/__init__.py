"""The common library of every driftloop service.

Settings, the Kafka bus (envelope, retries, dead letters), the embedded broker
launcher, telemetry (JSON logs with trace ids, Prometheus, health), the
project file, the River pipeline allowlist, and the dataset and artifact
stores. A mechanism used by two services lives here, once.
"""
