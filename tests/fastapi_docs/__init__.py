"""FastAPI's WebSocket documentation examples, ported by changing their imports only,
with tests in the style of FastAPI's own tutorial tests."""
