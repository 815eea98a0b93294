"""Centaur's http_fetch tool."""
