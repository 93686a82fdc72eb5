"""Local infrastructure Tessera starts by itself: an Apache Kafka broker built from Maven Central jars."""
