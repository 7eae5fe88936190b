"""What every extraction stage runs inside: the skeleton, shards, processes, the pre-flight."""
