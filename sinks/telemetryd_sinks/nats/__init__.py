"""The NATS JetStream sink: one subject per schema, deduplicated by Nats-Msg-Id."""
