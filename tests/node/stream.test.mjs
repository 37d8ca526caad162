// client.js's own stream (a client that does not share), against a real HTTP
// stream on 127.0.0.1: a dead connection is noticed, reconnects keep the
// cursor, and an id is delivered once. The tests wait on real timers, so they
// run side by side.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { SSEServer, loadClient, sleep, waitFor } from "./harness.mjs";

const { SSEPushClient } = await loadClient();

/** A client of a new server (`options`), closed after test `t`; `got` records its handlers' calls. */
async function connect(t, options) {
  const server = new SSEServer(options);
  const url = await server.start();
  const got = [];
  const client = new SSEPushClient(url, { shared: false });
  t.after(async () => {
    client.close();
    await server.close();
  });
  for (const type of ["message", "open", "error"]) {
    client.on(type, (event) => got.push([event.type, event.data, event.lastEventId]));
  }
  await waitFor(() => client.readyState === 1, 2000, "not open");
  return { server, client, got };
}

function messages(got) {
  return got.filter(([type]) => type === "message").map(([, data]) => data);
}

describe("the stream", { concurrency: true }, () => {
  test("a stream that stops carrying bytes without closing is reconnected from its cursor", async (t) => {
    // Keepalives every 100 ms, told in the first chunk: silence past 2 x 100 ms
    // plus the slack means the connection is dead.
    const { server, client, got } = await connect(t, { keepalive: 100 });
    const cursor = server.publish("before");
    await waitFor(() => messages(got).length === 1, 2000, "no event");
    await sleep(500); // keepalives keep a live stream open
    assert.equal(server.requests.length, 1);
    server.stall();
    const stalled = Date.now();
    await waitFor(() => server.requests.length === 2, 4000, "the dead stream was never noticed");
    const noticed = Date.now() - stalled;
    await waitFor(() => client.readyState === 1, 2000, "not open again");
    assert.equal(server.requests[1], cursor);
    assert.deepEqual(got.map(([type]) => type), ["open", "message", "error", "open"]);
    server.publish("after");
    await waitFor(() => messages(got).length === 2, 2000, "no event after the reconnect");
    assert.deepEqual(messages(got), ["before", "after"]);
    assert.ok(noticed >= 200, `reconnected after ${noticed} ms of silence, before two keepalives`);
  });

  test("without a keepalive announced, a silent stream is left alone", async (t) => {
    const { server, client } = await connect(t, { keepalive: 100, announce: false });
    server.stall();
    await sleep(2500); // past what the limit would be for the 100 ms keepalive
    assert.equal(server.requests.length, 1);
    assert.equal(client.readyState, 1);
  });

  test("an event id already delivered is dropped, also across a reconnect", async (t) => {
    const { server, client, got } = await connect(t, {});
    server.publish("one");
    server.send("id: 1\ndata: one again\n\n");
    server.publish("two");
    await waitFor(() => messages(got).length >= 2, 2000, "events missing");
    // The server ends the stream; the reconnect's replay overlaps what was delivered.
    server.end();
    await waitFor(() => server.requests.length === 2 && client.readyState === 1, 2000, "no reconnect");
    server.send("id: 2\ndata: two again\n\nid: 3\ndata: three\n\n");
    await waitFor(() => messages(got).length >= 3, 2000, "events missing");
    await sleep(50);
    assert.deepEqual(messages(got), ["one", "two", "three"]);
    assert.equal(client.lastEventId, "3");
  });
});
