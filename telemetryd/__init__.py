"""telemetryd: the out-of-process event bus for Jupyter deployments."""

__version__ = "0.1.0"
