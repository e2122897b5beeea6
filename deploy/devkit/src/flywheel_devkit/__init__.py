"""Flywheel's development tooling, kept out of the service images.

- :mod:`flywheel_devkit.kafka`: a local KRaft Kafka broker whose jars come from Maven Central
  (``deploy/kafka/pom.xml``); ``python -m flywheel_devkit.kafka start|stop|status|restart``.
- :mod:`flywheel_devkit.testing`: test helpers and the ``flywheel`` pytest plugin (fixtures).
- :mod:`flywheel_devkit.simulate`: simulated traffic, behind ``flywheel simulate``.
"""
