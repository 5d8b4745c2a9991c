"""What ties telemetryd to the Jupyter stack on the daemon side: JupyterHub identity, Pioneer."""
