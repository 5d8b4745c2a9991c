"""The event itself: envelope, framing and protocol, schema registry, validation into a record."""
