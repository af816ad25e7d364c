"""Helpers shared by the test modules (plain functions and classes; the shared fixtures are in
``tests/conftest.py``).  No test module imports another test module: what two of them need lives here.

* :mod:`tests.helpers.paths` -- the repository root, the shared audio clips, the model cache.
* :mod:`tests.helpers.audio` -- the shared clips and their reference texts, espeak-ng speech.
* :mod:`tests.helpers.server` -- settings for tests, servers in-process (``ServerThread``,
  ``LoadedHub``) and as a subprocess (``ServeProcess``), HTTP GET, collecting WebSocket events.
* :mod:`tests.helpers.transcripts` -- transcript normalisation and protocol-order checks.
* :mod:`tests.helpers.llm` -- a tiny random causal LM and a fake OpenAI-compatible server.
"""
