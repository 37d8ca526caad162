"""The broker for a Redis Cluster: its listener (one connection a shard), cursors and scripts."""
