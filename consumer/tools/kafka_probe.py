"""The librdkafka probe: the Kafka settings checked by librdkafka itself before anything runs.

`config.py` reads the environment; this builds one client from the result, as `run` will, so a
property librdkafka does not know, a bad value or a missing TLS file stops start-up (and
`check-config`) with the CAPI_KAFKA_* variable named.
"""

from __future__ import annotations

from consumer.config import PREFIX, Config
from consumer.errors import ConfigError


def check_kafka_settings(config: Config) -> None:
    """Build a librdkafka client from the settings, as `run` will, and close it at once.

    Raises `ConfigError` naming the CAPI_KAFKA_* variable of an unknown property or a bad value
    (librdkafka checks both, and the TLS files, when a client is created).
    """
    from confluent_kafka import Consumer, KafkaException

    settings = {
        **config.kafka_client_config(),
        "group.id": config.group_id,
        "log_level": 0,  # a check, not a run: no connection chatter on stderr
    }
    try:
        Consumer(settings).close()
    except KafkaException as exc:
        message = str(exc.args[0].str() if exc.args else exc)
        for name in settings:
            if f'"{name}"' in message:
                key = PREFIX + "KAFKA_" + name.replace(".", "_").upper()
                raise ConfigError(key, message) from None
        raise ConfigError(PREFIX + "KAFKA_*", message) from None
