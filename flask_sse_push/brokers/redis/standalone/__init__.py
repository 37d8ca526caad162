"""The broker for one Redis server: :class:`~.broker.RedisBroker`, its listener and its queues."""
