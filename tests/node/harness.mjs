// Stand-ins for what a browser gives client.js, for `node --test`: an SSE
// server on 127.0.0.1, a Web Locks manager shared by "tabs" (worker threads,
// each with its own event loop, talking over Node's real BroadcastChannel),
// and a loader for the client module itself.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import { MessageChannel, Worker } from "node:worker_threads";

/** The client under test; SSE_PUSH_CLIENT_JS names another file (to check that a test can fail). */
export const CLIENT_PATH = process.env.SSE_PUSH_CLIENT_JS ?? new URL("../../flask_sse_push/static/client.js", import.meta.url);

/** Import client.js as the ES module browsers load (it has no package.json saying so). */
export function loadClient() {
  const source = readFileSync(CLIENT_PATH, "utf8");
  return import(`data:text/javascript;base64,${Buffer.from(source).toString("base64")}`);
}

/** Resolve once `condition()` is true; reject with `message` after `timeout` ms. */
export async function waitFor(condition, timeout, message) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out: ${message}`);
    await sleep(20);
  }
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A `text/event-stream` endpoint at `/events`, with numbered ids and replay
 * from `last_event_id` (the query parameter client.js sends), and the page's
 * session key at `/events/session-key`.
 */
export class SSEServer {
  /** Each stream request's `last_event_id` ("" for none), in order. */
  requests = [];
  /** What `/events/session-key` answers: `{"key": key}`, or `404` when null (an older server). */
  key = "session-one";
  /** How many times the session key was asked for. */
  keyRequests = 0;
  /** What a stream request is answered when not null: a status without a body (`204`, `403`). */
  refuse = null;
  #events = [];
  #streams = new Set();
  #server = http.createServer((request, response) => this.#serve(request, response));
  #keepalive;
  #announce;
  #retry;
  #timer;

  /**
   * @param {{keepalive?: number | null, announce?: boolean, retry?: number}} options
   *   `keepalive`: ms between keepalive comments (none if null); `announce`:
   *   whether the first chunk tells it (`: keepalive <ms>`); `retry`: ms.
   */
  constructor({ keepalive = null, announce = true, retry = 20 } = {}) {
    this.#keepalive = keepalive;
    this.#announce = announce;
    this.#retry = retry;
  }

  async start() {
    await new Promise((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    if (this.#keepalive !== null) {
      this.#timer = setInterval(() => this.#write(": keepalive\n\n"), this.#keepalive);
    }
    return `http://127.0.0.1:${this.#server.address().port}/events?channel=default`;
  }

  /** Open streams, the stalled ones included. */
  get open() {
    return this.#streams.size;
  }

  /** Send an event to every stream that is not stalled; return its id. */
  publish(data, type = null) {
    const id = String(this.#events.length + 1);
    this.#events.push({ id, data, type });
    this.#write(encode({ id, data, type }));
    return id;
  }

  /** Write `text` to every open stream that is not stalled (a replayed duplicate, say). */
  send(text) {
    this.#write(text);
  }

  /** Every open stream stops carrying bytes, its connection left open (no FIN, no RST). */
  stall() {
    for (const stream of this.#streams) stream.stalled = true;
  }

  /** End every open stream (a FIN: the client reconnects). */
  end() {
    for (const stream of this.#streams) stream.response.end();
  }

  close() {
    clearInterval(this.#timer);
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(resolve));
  }

  /** Each open stream ends with `text`, after which the client must not come back. */
  finish(text) {
    for (const stream of this.#streams) stream.response.end(text);
  }

  #serve(request, response) {
    if (new URL(request.url, "http://x").pathname === "/events/session-key") {
      this.keyRequests += 1;
      if (this.key === null) response.writeHead(404).end();
      else response.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ key: this.key }));
      return;
    }
    if (this.refuse !== null) {
      this.requests.push(new URL(request.url, "http://x").searchParams.get("last_event_id") ?? "");
      response.writeHead(this.refuse).end();
      return;
    }
    const since = new URL(request.url, "http://x").searchParams.get("last_event_id") ?? "";
    this.requests.push(since);
    response.writeHead(200, { "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store" });
    let first = `retry: ${this.#retry}\n`;
    if (this.#announce && this.#keepalive !== null) first += `: keepalive ${this.#keepalive}\n`;
    const start = since === "" ? this.#events.length : this.#events.findIndex((event) => event.id === since) + 1;
    response.write(first + "\n" + this.#events.slice(start).map(encode).join(""));
    const stream = { response, stalled: false };
    this.#streams.add(stream);
    response.on("close", () => this.#streams.delete(stream));
  }

  #write(text) {
    for (const stream of this.#streams) if (!stream.stalled) stream.response.write(text);
  }
}

function encode({ id, data, type }) {
  return `${type ? `event: ${type}\n` : ""}id: ${id}\ndata: ${data}\n\n`;
}

/**
 * The Web Locks manager of one origin, in the main thread, for tabs in worker
 * threads. Each tab talks to it over a port of its own (see `tab.mjs`): a tab
 * that crashes is `drop`ped, and its locks go, as a browser does.
 */
export class LockManager {
  /** name -> {port, id} of the holder */
  #held = new Map();
  /** name -> [{port, id}] waiting, in order */
  #queues = new Map();

  /** A new tab's port (transfer it to the worker). */
  connect() {
    const { port1, port2 } = new MessageChannel();
    port1.on("message", (message) => this.#receive(port1, message));
    return { mine: port1, theirs: port2 };
  }

  /** The tab behind `port` is gone: its locks are released, its requests leave the queues. */
  drop(port) {
    for (const [name, queue] of this.#queues) this.#queues.set(name, queue.filter((entry) => entry.port !== port));
    for (const [name, holder] of [...this.#held]) if (holder.port === port) this.#next(name);
    port.close();
  }

  #receive(port, { op, id, name, steal }) {
    if (op === "request") {
      const holder = this.#held.get(name);
      if (holder && steal) holder.port.postMessage({ op: "stolen", id: holder.id });
      if (!holder || steal) this.#grant(name, { port, id });
      else this.#queue(name).push({ port, id });
    } else if (op === "release") {
      const holder = this.#held.get(name);
      if (holder && holder.port === port && holder.id === id) this.#next(name);
    } else if (op === "abort") {
      const queue = this.#queue(name);
      const at = queue.findIndex((entry) => entry.port === port && entry.id === id);
      if (at !== -1) queue.splice(at, 1);
    }
  }

  #queue(name) {
    if (!this.#queues.has(name)) this.#queues.set(name, []);
    return this.#queues.get(name);
  }

  #grant(name, entry) {
    this.#held.set(name, entry);
    entry.port.postMessage({ op: "granted", id: entry.id });
  }

  #next(name) {
    this.#held.delete(name);
    const next = this.#queue(name).shift();
    if (next) this.#grant(name, next);
  }
}

/** A browser tab running one SSEPushClient, in a worker thread. */
export class Tab {
  #worker;
  #locks;
  #lockPort;
  #seq = 0;
  #replies = new Map();

  /**
   * @param {LockManager} locks
   * @param {string} url
   * @param {object} options SSEPushOptions
   */
  constructor(locks, url, options = {}) {
    const { mine, theirs } = locks.connect();
    this.#locks = locks;
    this.#lockPort = mine;
    this.#worker = new Worker(new URL("./tab.mjs", import.meta.url), {
      workerData: { url, options, locks: theirs, client: String(CLIENT_PATH) },
      transferList: [theirs],
    });
    this.#worker.on("message", ({ seq, ...reply }) => {
      this.#replies.get(seq)?.(reply);
      this.#replies.delete(seq);
    });
    this.#worker.on("error", (error) => {
      throw error;
    });
  }

  /** Ask the tab: "state" -> {role, readyState, got}; "close"; "freeze"; "resume"; "hang" (with `ms`). */
  ask(op, extra = {}) {
    const seq = ++this.#seq;
    return new Promise((resolve) => {
      this.#replies.set(seq, resolve);
      this.#worker.postMessage({ op, seq, ...extra });
    });
  }

  async role() {
    return (await this.ask("state")).role;
  }

  /** What the tab's handlers got, as [type, data, lastEventId]. */
  async got() {
    return (await this.ask("state")).got;
  }

  /** The tab's message data, in order. */
  async messages() {
    return (await this.got()).filter(([type]) => type === "message").map(([, data]) => data);
  }

  /** The tab crashes: its thread stops at once, the browser frees its locks. */
  async crash() {
    await this.#worker.terminate();
    this.#locks.drop(this.#lockPort);
  }

  /** Close the client, then the tab. */
  async quit() {
    await this.ask("close").catch(() => {});
    await this.crash();
  }
}

/**
 * The tabs of one origin on one stream URL: one SSE server, one lock manager.
 * Start with `open()`, end with `close()`.
 */
export class Origin {
  server = new SSEServer();
  locks = new LockManager();
  /** @type {Tab[]} */
  tabs = [];
  /** The id of the last event published. */
  lastId = "";
  url = "";

  /** `count` tabs, once one leads and all are open. */
  async open(count, options = {}) {
    this.url = await this.server.start();
    for (let n = 0; n < count; n += 1) this.tab(options);
    await waitFor(async () => (await this.leaders()).length === 1, 5000, "no leader");
    const open = async () => (await Promise.all(this.tabs.map((tab) => tab.ask("state")))).every((s) => s.readyState === 1);
    await waitFor(open, 5000, "not open");
    return this.tabs;
  }

  /** One more tab. */
  tab(options = {}) {
    const tab = new Tab(this.locks, this.url, options);
    this.tabs.push(tab);
    return tab;
  }

  async leaders(among = this.tabs) {
    const roles = await Promise.all(among.map((tab) => tab.role()));
    return among.filter((_, i) => roles[i] === "leader");
  }

  /** Publish `count` events `${prefix}${n}`, one every `every` ms; return their data. */
  async publishing(prefix, count, every = 20) {
    const sent = [];
    for (let n = 0; n < count; n += 1) {
      this.lastId = this.server.publish(`${prefix}${n}`);
      sent.push(`${prefix}${n}`);
      await sleep(every);
    }
    return sent;
  }

  /** Every tab of `among` gets the messages `expected`, once each, in order. */
  async everyTabGot(among, expected) {
    for (const tab of among) {
      const enough = async () => (await tab.messages()).length >= expected.length;
      await waitFor(enough, 5000, "events missing").catch(async (error) => {
        const states = await Promise.all(among.map((each) => each.ask("state")));
        throw new Error(`${error.message}: expected ${JSON.stringify(expected)}; tabs: ${JSON.stringify(states)}`);
      });
    }
    await sleep(100); // time for a late duplicate
    for (const tab of among) assert.deepEqual(await tab.messages(), expected);
  }

  /** A tab that crashed is gone: leave it out of `close()`. */
  forget(tab) {
    this.tabs = this.tabs.filter((each) => each !== tab);
  }

  async close() {
    await Promise.all(this.tabs.map((tab) => tab.quit()));
    await this.server.close();
  }
}
