"""Redis Streams plumbing: key names, the embedded server, clients, stream helpers."""
