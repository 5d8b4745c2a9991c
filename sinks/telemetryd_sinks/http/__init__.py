"""The HTTP sink: batches POSTed to a telemetryd or any JSON-lines endpoint."""
