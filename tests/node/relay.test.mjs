// The tab election (Web Locks) and relay protocol (BroadcastChannel) of
// client.js: tabs are worker threads with their own event loops, sharing one
// lock manager and Node's real BroadcastChannel, against a real HTTP stream.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Origin, sleep, waitFor } from "./harness.mjs";

/** A new origin for test `t`, closed after it. */
function newOrigin(t) {
  const origin = new Origin();
  t.after(() => origin.close());
  return origin;
}

// Each test has its own server and tabs: they run side by side.
describe("the shared stream", { concurrency: true }, () => {
  test("one leader holds the only stream and followers get every event once, in order", async (t) => {
    const origin = newOrigin(t);
    const all = await origin.open(3);
    await sleep(300); // time for a wrong second stream
    assert.equal(origin.server.requests.length, 1);
    assert.equal(origin.server.open, 1);
    const roles = (await Promise.all(all.map((tab) => tab.role()))).sort();
    assert.deepEqual(roles, ["follower", "follower", "leader"]);
    await origin.everyTabGot(all, await origin.publishing("a", 5));
  });

  test("a leader that closes hands over: the next one resumes from its cursor", async (t) => {
    const origin = newOrigin(t);
    const all = await origin.open(3);
    const [leader] = await origin.leaders();
    const others = all.filter((tab) => tab !== leader);
    const sent = await origin.publishing("b", 3);
    await origin.everyTabGot(others, sent);
    await leader.ask("close");
    await waitFor(async () => (await origin.leaders(others)).length === 1, 2000, "no tab took over");
    await waitFor(() => origin.server.open === 1, 2000, "the new leader did not connect");
    assert.deepEqual(origin.server.requests, ["", origin.lastId]);
    origin.server.publish("after");
    await origin.everyTabGot(others, [...sent, "after"]);
  });

  test("a leader that crashes hands over, and nothing is missed or repeated", async (t) => {
    const origin = newOrigin(t);
    const all = await origin.open(3);
    const [leader] = await origin.leaders();
    const others = all.filter((tab) => tab !== leader);
    const sent = origin.publishing("c", 20);
    await sleep(150);
    await leader.crash();
    origin.forget(leader);
    await waitFor(async () => (await origin.leaders(others)).length === 1, 2000, "no tab took over");
    await origin.everyTabGot(others, await sent);
  });

  test("a hung leader has its lock stolen, and gives the stream up when it wakes", async (t) => {
    const origin = newOrigin(t);
    const all = await origin.open(3);
    const [leader] = await origin.leaders();
    const others = all.filter((tab) => tab !== leader);
    const before = await origin.publishing("d", 3);
    await origin.everyTabGot(all, before);
    const started = Date.now();
    await leader.ask("hang", { ms: 3000 });
    const sent = origin.publishing("e", 25, 100);
    await waitFor(async () => (await origin.leaders(others)).length === 1, 2900, "nobody stole the lock");
    const stolenAfter = Date.now() - started;
    const expected = [...before, ...(await sent)];
    // Awake again, the old leader is a follower and catches up too.
    await waitFor(async () => (await leader.role()) === "follower", 2000, "the old leader did not step down");
    await origin.everyTabGot(all, expected);
    await waitFor(() => origin.server.open === 1, 2000, "the old leader's stream is still open");
    assert.ok(stolenAfter < 2900, `stolen after ${stolenAfter} ms`);
  });

  test("a leader whose page is frozen hands over at once, and queues again on resume", async (t) => {
    const origin = newOrigin(t);
    const all = await origin.open(2);
    const [leader] = await origin.leaders();
    const [other] = all.filter((tab) => tab !== leader);
    const before = await origin.publishing("g", 2);
    await origin.everyTabGot(all, before);
    const frozen = Date.now();
    await leader.ask("freeze");
    // Well before a follower would steal from a silent leader (RELAY.SILENCE).
    await waitFor(async () => (await other.role()) === "leader", 800, "no hand-over on freeze");
    assert.ok(Date.now() - frozen < 800);
    assert.equal(await leader.role(), "follower");
    await leader.ask("resume");
    await sleep(300);
    assert.deepEqual((await Promise.all(all.map((tab) => tab.role()))).sort(), ["follower", "leader"]);
    await origin.everyTabGot(all, [...before, ...(await origin.publishing("h", 2))]);
  });

  test("a tab opened from a cursor gets what came since from the leader, before live events", async (t) => {
    const origin = newOrigin(t);
    const [first] = await origin.open(1);
    const cursor = origin.server.publish("f0");
    await waitFor(async () => (await first.messages()).length === 1, 2000, "f0 missing");
    origin.server.publish("f1", "created");
    origin.server.publish("f2");
    const late = origin.tab({ lastEventId: cursor });
    const caughtUp = async () => (await late.got()).filter(([type]) => type !== "open").length >= 2;
    await waitFor(caughtUp, 3000, "no catch-up");
    origin.server.publish("f3");
    await waitFor(async () => (await late.messages()).length >= 2, 3000, "f3 missing");
    await sleep(100);
    const got = (await late.got()).map(([type, data]) => [type, data]);
    assert.deepEqual(got, [["open", ""], ["created", "f1"], ["message", "f2"], ["message", "f3"]]);
    assert.equal(await late.role(), "follower");
    assert.equal(origin.server.requests.length, 1);
  });
});
