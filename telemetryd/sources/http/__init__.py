"""The HTTP source: server (transport), parser (sans-IO), app (the endpoints) and its helpers.

The transport still imports the app's request and response types (server.py and
content_encoding.py import app.py); making the transport independent of the app, as in
uvicorn, is a refactor of its own, not part of this move.
"""
