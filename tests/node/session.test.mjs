// Sessions in client.js: only tabs holding the same session key (the server's
// `/events/session-key`) share a stream, relay messages without the key are
// dropped, a leader re-sends its memory at most once per tab, and the stop id
// ends a client without another request.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Origin, sleep, waitFor } from "./harness.mjs";

/** The last chunk of a revoked stream, as flask_sse_push.stream.stop_chunk writes it. */
const STOPPED = ": closed: revoked\nretry: 100\nid: flask-sse-push:stopped\n\n";

/** A new origin for test `t`, closed after it. */
function newOrigin(t) {
  const origin = new Origin();
  t.after(() => origin.close());
  return origin;
}

/**
 * A page of the origin that does not hold the session key, posting `body` on
 * every channel name it could know: the one tabs used before sessions (the
 * stream URL alone), and the session's own name (as if it had learnt it)
 * without the key and with a wrong one. Returns the channels, to close.
 */
function forge(url, key, body) {
  const names = [`flask-sse-push ${url}`, `flask-sse-push ${key} ${url}`];
  const channels = names.map((name) => new BroadcastChannel(name));
  for (const channel of channels) {
    channel.postMessage({ ...body, from: "forger" });
    channel.postMessage({ ...body, from: "forger", key: "a-guess" });
  }
  return channels;
}

/** Every message seen on the session's channels (old name and scoped name), for `listen.stop()`. */
function listen(url, key) {
  const seen = [];
  const channels = [`flask-sse-push ${url}`, `flask-sse-push ${key} ${url}`].map((name) => {
    const channel = new BroadcastChannel(name);
    channel.onmessage = (message) => seen.push(message.data);
    return channel;
  });
  return { seen, stop: () => channels.forEach((channel) => channel.close()) };
}

async function clientUrl(tab) {
  return (await tab.ask("state")).url;
}

describe("sessions", { concurrency: true }, () => {
  test("tabs of another session key elect their own leader and hold their own stream", async (t) => {
    const origin = newOrigin(t);
    origin.server.key = "alice";
    const alice = [...(await origin.open(2))];
    origin.server.key = "bob";
    const bob = [origin.tab(), origin.tab()];
    await waitFor(async () => (await origin.leaders(bob)).length === 1, 5000, "bob's tabs elected nobody");
    await waitFor(() => origin.server.open === 2, 5000, "bob's leader did not connect");
    assert.deepEqual((await Promise.all(alice.map((tab) => tab.role()))).sort(), ["follower", "leader"]);
    assert.equal(origin.server.requests.length, 2);
    await origin.everyTabGot([...alice, ...bob], await origin.publishing("s", 3));
  });

  test("a session that changes before a reconnect moves the tabs to the new session's leader", async (t) => {
    const origin = newOrigin(t);
    origin.server.key = "alice";
    const old = [...(await origin.open(2))];
    const before = await origin.publishing("x", 2);
    await origin.everyTabGot(old, before);
    origin.server.key = "bob";
    const late = origin.tab(); // bob's page, opened while the old tabs still hold their stream
    await waitFor(async () => (await late.role()) === "leader", 5000, "bob's tab does not lead");
    await waitFor(() => origin.server.open === 2, 5000, "bob's leader did not connect");
    const both = await origin.publishing("z", 1);
    await origin.everyTabGot([late], both);
    origin.server.end();
    // Every tab now holds bob's key: one leader among the three, one stream.
    await waitFor(async () => (await origin.leaders()).length === 1, 5000, "not one leader");
    await waitFor(() => origin.server.open === 1, 5000, "not one stream");
    const after = await origin.publishing("y", 3);
    await origin.everyTabGot(old, [...before, ...both, ...after]);
    await origin.everyTabGot([late], [...both, ...after]);
    for (const tab of origin.tabs) assert.deepEqual((await tab.got()).filter(([type]) => type === "reset"), []);
  });

  test("without a session key from the server, every tab has its own stream", async (t) => {
    const origin = newOrigin(t);
    origin.server.key = null;
    origin.url = await origin.server.start();
    const tabs = [origin.tab(), origin.tab()];
    await waitFor(() => origin.server.open === 2, 5000, "not one stream per tab");
    assert.deepEqual(await Promise.all(tabs.map((tab) => tab.role())), ["own", "own"]);
    await origin.everyTabGot(tabs, await origin.publishing("o", 2));
  });
});

describe("forged relay messages", { concurrency: true }, () => {
  test("a forged event reaches no tab", async (t) => {
    const origin = newOrigin(t);
    const all = await origin.open(3);
    const first = await origin.publishing("f", 1);
    await origin.everyTabGot(all, first);
    const url = await clientUrl(all[0]);
    const forged = { k: "event", type: "message", data: "forged", id: "999", fresh: true };
    forge(url, origin.server.key, forged).forEach((channel) => channel.close());
    await sleep(300);
    await origin.everyTabGot(all, [...first, ...(await origin.publishing("g", 1))]);
  });

  test("a forged reset reaches no tab", async (t) => {
    const origin = newOrigin(t);
    const all = await origin.open(3);
    const url = await clientUrl(all[0]);
    const data = JSON.stringify({ last_event_id: "", reason: "unknown" });
    forge(url, origin.server.key, { k: "event", type: "reset", data, id: "", fresh: false }).forEach((c) => c.close());
    await origin.everyTabGot(all, await origin.publishing("r", 2));
    for (const tab of all) assert.deepEqual((await tab.got()).filter(([type]) => type === "reset"), []);
  });

  test("a forged stop closes no tab", async (t) => {
    const origin = newOrigin(t);
    const all = await origin.open(3);
    const url = await clientUrl(all[0]);
    forge(url, origin.server.key, { k: "beat", state: 2, error: true }).forEach((channel) => channel.close());
    await sleep(300);
    const states = await Promise.all(all.map((tab) => tab.ask("state")));
    assert.deepEqual(states.map((state) => state.readyState), [1, 1, 1]);
    await origin.everyTabGot(all, await origin.publishing("p", 2));
  });

  test("a forged hello makes the leader re-send nothing, and a tab is caught up once", async (t) => {
    const origin = newOrigin(t);
    const all = await origin.open(2);
    await origin.everyTabGot(all, await origin.publishing("h", 5, 5));
    const url = await clientUrl(all[0]);
    const heard = listen(url, origin.server.key);
    t.after(heard.stop);
    for (let n = 0; n < 3; n += 1) forge(url, origin.server.key, { k: "hello", since: "1" }).forEach((c) => c.close());
    await sleep(300);
    const catchups = () => heard.seen.filter((message) => message.k === "catchup");
    assert.deepEqual(catchups(), []);
    // A tab of the session (it holds the key) asking again and again is answered once.
    const asking = new BroadcastChannel(`flask-sse-push ${origin.server.key} ${url}`);
    for (let n = 0; n < 3; n += 1) asking.postMessage({ k: "hello", since: "1", from: "one-tab", key: origin.server.key });
    asking.close();
    await waitFor(() => catchups().length > 0, 2000, "the leader did not answer a tab of its session");
    await sleep(300);
    assert.equal(catchups().length, 1);
    assert.deepEqual(
      catchups()[0].events.map((event) => event.data),
      ["h1", "h2", "h3", "h4"],
    );
  });
});

describe("the stop id", { concurrency: true }, () => {
  for (const [name, chunk] of [
    ["with retry", STOPPED],
    ["without retry", ": closed: revoked\nid: flask-sse-push:stopped\n\n"],
  ]) {
    for (const shared of [true, false]) {
      test(`ends every tab without another request (${name}, shared: ${shared})`, async (t) => {
        const origin = newOrigin(t);
        origin.url = await origin.server.start();
        const tabs = [origin.tab({ shared }), origin.tab({ shared })];
        const streams = shared ? 1 : 2;
        await waitFor(() => origin.server.open === streams, 5000, "streams not open");
        const open = async () => (await Promise.all(tabs.map((tab) => tab.ask("state")))).every((s) => s.readyState === 1);
        await waitFor(open, 5000, "a tab is not open"); // a follower too: it knows the leader
        origin.server.refuse = 204; // what the server answers a reconnect carrying the stop id
        origin.server.finish(chunk);
        const closed = async () => (await Promise.all(tabs.map((tab) => tab.ask("state")))).every((s) => s.readyState === 2);
        await waitFor(closed, 3000, "a tab did not stop");
        await sleep(500); // the harness server's retry is 20 ms, the stop chunk's 100 ms
        assert.equal(origin.server.requests.length, streams);
        for (const tab of tabs) assert.equal((await tab.got()).at(-1)[0], "error");
      });
    }
  }
});
