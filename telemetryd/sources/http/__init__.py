"""The HTTP source: server (transport), parser (sans-IO), app (the endpoints) and its helpers."""
