"""Local services for tests, the demo and the benchmark: real Kafka, a schema registry, Redis.

Nothing here is on the consumer's data path; downloads are cached under .kafka/ (git-ignored).
"""
