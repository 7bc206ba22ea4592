"""runwire: run flows and narrate every run as a durable gRPC event stream."""
