"""The stages, each one job and its I/O: Kafka source, Avro decode, dedup store, batcher,
delivery to Pinterest, dead letters, and the offset ledger with its map. No stage imports
another; only the engine knows them all."""
