"""GRIP mode: streams held by Pushpin or Fastly Fanout instead of a worker.

With ``SSE_PUSH_GRIP_URL`` set, a stream request that carries a valid
``Grip-Sig`` is answered at once: the replay the client needs, then
instructions (``Grip-Hold: stream``, one ``Grip-Channel`` per channel with its
``prev-id``, ``Grip-Keep-Alive``, a ``Grip-Link`` to fill gaps). Each publish
then goes to the broker as always and once to the proxy, with the id and
prev-id that let the proxy order it and notice a gap. The protocol:
https://pushpin.org/docs/protocols/grip/.

The pieces, one concept each: :mod:`.signature` (is the request from the
proxy), :mod:`.instruct` (the headers), :mod:`.history` (what the Redis broker
knows about each channel's position), :mod:`.proxy` (the publish items and
their delivery), :mod:`.mode` (the per-app state and the Flask side).
"""
