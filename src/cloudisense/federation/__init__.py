"""Federation: nodes that run each other's intents and follow each other's topics over MQTT (docs/federation.md)."""
