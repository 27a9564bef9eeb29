"""The unit on the air: the card log sent to an MQTT broker (the card is the outbox), alerts and liveness."""
