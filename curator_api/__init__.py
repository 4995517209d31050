"""Protobuf/gRPC code generated from proto/ at build time (setup.py); never edited."""
