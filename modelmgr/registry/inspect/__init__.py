"""registry/inspect."""
