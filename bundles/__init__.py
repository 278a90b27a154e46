"""The bundles that ship with modelmgr: one YAML file per bundle (schema in README.md here)."""
