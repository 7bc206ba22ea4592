"""Python client for runwire."""
