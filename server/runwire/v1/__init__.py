"""Generated protobuf and gRPC stubs for runwire.v1; never edited."""
