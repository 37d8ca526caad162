// The tab election (Web Locks) and relay protocol (BroadcastChannel) of
// client.js: tabs are worker threads with their own event loops, sharing one
// lock manager and Node's real BroadcastChannel, against a real HTTP stream.
import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { LockManager, SSEServer, Tab, sleep, waitFor } from "./harness.mjs";

let server;
let url;
let locks;
let tabs = [];

before(async () => {
  server = new SSEServer();
  url = await server.start();
});
after(() => server.close());
afterEach(async () => {
  await Promise.all(tabs.map((tab) => tab.quit()));
  tabs = [];
});

/** `count` tabs of one origin, on the same URL and channels. */
async function open(count, options = {}) {
  locks = new LockManager();
  tabs = Array.from({ length: count }, () => new Tab(locks, url, options));
  await waitFor(async () => (await leaders(tabs)).length === 1, 5000, "no leader");
  await waitFor(async () => (await Promise.all(tabs.map((tab) => tab.ask("state")))).every((s) => s.readyState === 1), 5000, "not open");
  return tabs;
}

async function leaders(among) {
  const roles = await Promise.all(among.map((tab) => tab.role()));
  return among.filter((_, i) => roles[i] === "leader");
}

/** The id of the last event published. */
let lastId = "";

/** Publish `count` events named `${prefix}${n}`, one every `every` ms; return their data. */
async function publishing(prefix, count, every = 20) {
  const sent = [];
  for (let n = 0; n < count; n += 1) {
    lastId = server.publish(`${prefix}${n}`);
    sent.push(`${prefix}${n}`);
    await sleep(every);
  }
  return sent;
}

async function everyTabGot(among, expected) {
  for (const tab of among) {
    await waitFor(async () => (await tab.messages()).length >= expected.length, 5000, "events missing").catch(async (error) => {
      const states = await Promise.all(among.map((each) => each.ask("state")));
      throw new Error(`${error.message}: expected ${JSON.stringify(expected)}; tabs: ${JSON.stringify(states)}`);
    });
  }
  await sleep(100); // time for a late duplicate
  for (const tab of among) assert.deepEqual(await tab.messages(), expected);
}

test("one leader holds the only stream and followers get every event once, in order", async () => {
  const opened = server.requests.length;
  const all = await open(3);
  await sleep(300); // time for a wrong second stream
  assert.equal(server.requests.length - opened, 1);
  assert.equal(server.open, 1);
  const roles = (await Promise.all(all.map((tab) => tab.role()))).sort();
  assert.deepEqual(roles, ["follower", "follower", "leader"]);
  await everyTabGot(all, await publishing("a", 5));
});

test("a leader that closes hands over: the next one resumes from its cursor", async () => {
  const all = await open(3);
  const [leader] = await leaders(all);
  const others = all.filter((tab) => tab !== leader);
  const sent = await publishing("b", 3);
  await everyTabGot(others, sent);
  await leader.ask("close");
  await waitFor(async () => (await leaders(others)).length === 1, 2000, "no tab took over");
  await waitFor(() => server.open === 1, 2000, "the new leader did not connect");
  assert.equal(server.requests.at(-1), lastId);
  server.publish("after");
  await everyTabGot(others, [...sent, "after"]);
});

test("a leader that crashes hands over, and nothing is missed or repeated", async () => {
  const all = await open(3);
  const [leader] = await leaders(all);
  const others = all.filter((tab) => tab !== leader);
  const sent = publishing("c", 20);
  await sleep(150);
  await leader.crash();
  tabs = others; // the crashed tab is gone already
  await waitFor(async () => (await leaders(others)).length === 1, 2000, "no tab took over");
  await everyTabGot(others, await sent);
});

test("a hung leader has its lock stolen, and gives the stream up when it wakes", async () => {
  const all = await open(3);
  const [leader] = await leaders(all);
  const others = all.filter((tab) => tab !== leader);
  const before = await publishing("d", 3);
  await everyTabGot(all, before);
  const started = Date.now();
  await leader.ask("hang", { ms: 2500 });
  const sent = publishing("e", 20, 100);
  await waitFor(async () => (await leaders(others)).length === 1, 2400, "nobody stole the lock");
  const stolenAfter = Date.now() - started;
  const expected = [...before, ...(await sent)];
  // Awake again, the old leader is a follower and catches up too.
  await waitFor(async () => (await leader.role()) === "follower", 2000, "the old leader did not step down");
  await everyTabGot(all, expected);
  await waitFor(() => server.open === 1, 2000, "the old leader's stream is still open");
  assert.ok(stolenAfter < 2400, `stolen after ${stolenAfter} ms`);
});

test("a tab opened from a cursor gets what came since from the leader, before live events", async () => {
  const [first] = await open(1);
  const cursor = server.publish("f0");
  await waitFor(async () => (await first.messages()).length === 1, 2000, "f0 missing");
  server.publish("f1", "created");
  server.publish("f2");
  const late = new Tab(locks, url, { lastEventId: cursor });
  tabs.push(late);
  await waitFor(async () => (await late.got()).filter(([type]) => type !== "open").length >= 2, 3000, "no catch-up");
  server.publish("f3");
  await waitFor(async () => (await late.messages()).length >= 2, 3000, "f3 missing");
  await sleep(100);
  const got = (await late.got()).map(([type, data]) => [type, data]);
  assert.deepEqual(got, [["open", ""], ["created", "f1"], ["message", "f2"], ["message", "f3"]]);
  assert.equal(await late.role(), "follower");
});
