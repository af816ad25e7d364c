"""Edge of Dauys: the WebSocket server, HTTP endpoints, the CLI and the web demo."""

__version__ = "0.1.0"
