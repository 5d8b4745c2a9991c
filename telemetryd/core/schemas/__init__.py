"""The schema registry: event schemas loaded, checked, compiled once per ($id, version), looked up.

One module per step: `loading` finds and parses the files, `rules` says what a schema must
satisfy (docs/schemas.md), `compilation` turns a checked document into a fastjsonschema
validator, `model` holds the compiled schema and the problems, and `registry` runs the steps
and serves the lookups. The shipped schema files themselves are the data package
telemetryd.schemas (the repository's schemas/ folder).
"""
