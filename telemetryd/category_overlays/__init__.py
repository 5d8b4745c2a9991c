"""The category overlays shipped with telemetryd: package data of `telemetryd.category_overlays`.

They give privacy categories to the shipped schemas that carry none (Jupyter Server's and
JupyterHub's, copied unchanged). They live apart from the schemas because every file under the
schemas' folder is loaded as a schema.
"""
