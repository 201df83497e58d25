"""Jinja blueprints of every generated file, the chat-template registry and the pin matrix."""
