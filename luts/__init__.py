"""The bundled looks, as package data (read through ``importlib.resources``)."""
