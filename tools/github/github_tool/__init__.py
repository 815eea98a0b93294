"""Centaur's GitHub tool."""
