"""Where events come in: one module per transport."""
