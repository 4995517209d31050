"""Generated from proto/curator/v1 (curator_pb2, curator_pb2_grpc)."""
