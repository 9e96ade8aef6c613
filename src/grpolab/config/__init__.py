"""Configuration: the typed tree (schema.py) and how it is filled (load.py: presets, .env, environment, overrides)."""
