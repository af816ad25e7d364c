"""Edge of Dauys: the WebSocket server, the carriers' codecs, HTTP endpoints, the CLI and the web demo."""
