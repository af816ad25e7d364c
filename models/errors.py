class ModelError(Exception):
    """A model cannot be found, fetched or loaded. The message is one line and names the fix."""
