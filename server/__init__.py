"""Curator DB gRPC server."""
