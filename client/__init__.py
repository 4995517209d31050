"""Curator DB Python client: `Client(address, api_key)`; errors in `curator.errors`."""

from client.client import Client

__all__ = ["Client"]
