"""``make chaos``: a bounded fault-injection run on Apache Kafka (see run.py)."""
