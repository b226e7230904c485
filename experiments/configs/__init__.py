"""ml_collections experiment configs: base.py and one file per method."""
