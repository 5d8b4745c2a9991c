"""The HTTP sink: batches POSTed as NDJSON to a webhook, or to another telemetryd."""
