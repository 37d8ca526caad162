// @ts-check
/**
 * Flask-SSE-Push browser client: one server stream shared by every tab.
 *
 * Served by the blueprint at `<SSE_PUSH_URL_PREFIX>/client.js`. No dependencies.
 *
 * Sharing: the clients of one origin that ask for the same URL and channel set
 * elect one leader with the Web Locks API; it holds the only stream and relays
 * each event over a `BroadcastChannel`. Every client remembers the ids it has
 * delivered, so when the leader closes, crashes or freezes, the next one
 * resumes from the last id it saw and nothing is missed or repeated.
 *
 * The stream is read with `fetch()` and parsed here, following the WHATWG HTML
 * "Server-sent events" parsing rules (§9.2.6), because `EventSource` cannot
 * report events of types nobody registered (the leader must relay them all)
 * and cannot tell a `204` (revoked: stop for good) from a network error.
 *
 * @module
 */

export const CONNECTING = 0;
export const OPEN = 1;
export const CLOSED = 2;

/** Milliseconds before a reconnect when the server sent no `retry:`. */
const DEFAULT_RETRY = 3000;
/** Milliseconds between the leader's heartbeats. */
const BEAT_INTERVAL = 500;
/** Milliseconds between a follower's checks that the leader still speaks. */
const WATCH_INTERVAL = 250;
/**
 * Milliseconds of leader silence before a follower asks whether it is alive.
 * Short is safe: a leader in a background tab whose timers are throttled still
 * answers the question at once, so only a frozen or hung leader loses the lock.
 */
const SILENCE = 1000;
/** Milliseconds a follower waits for that answer before taking the lock. */
const PING_WAIT = 400;
/** Milliseconds a stopped leader keeps the lock so followers learn the stop first. */
const STOP_DRAIN = 500;
/** How many delivered events each client remembers, for dedup and catch-up. */
const MEMORY = 1024;

/**
 * @typedef {object} SSEPushEvent
 * @property {string} type "message" for unnamed events, else the `event:` field;
 *   "open" and "error" for connection state.
 * @property {string} data the event's data, lines joined with "\n".
 * @property {string} lastEventId the id in effect after this event.
 */

/** @typedef {(event: SSEPushEvent) => void} SSEPushHandler */

/**
 * @typedef {object} SSEPushOptions
 * @property {string[]} [channels] channels to stream (default `["default"]`).
 * @property {string} [lastEventId] first-connect cursor, e.g. `sse.cursor(...)` rendered into the page.
 * @property {boolean} [shared] share one stream across tabs (default true).
 * @property {boolean} [withCredentials] send cookies to another origin too.
 */

/**
 * @typedef {{k: "event", from: string, type: string, data: string, id: string, fresh: boolean}
 *   | {k: "cursor", from: string, id: string}
 *   | {k: "beat", from: string, state: number, error: boolean}
 *   | {k: "hello", from: string, since: string | null}
 *   | {k: "catchup", from: string, to: string, known: boolean, events: Delivered[]}} Relay
 */

/** @typedef {{type: string, data: string, id: string}} Delivered */

/**
 * Incremental `text/event-stream` parser (WHATWG HTML §9.2.6).
 *
 * Feed it decoded text in chunks of any size; it calls `onEvent` for each
 * dispatched event and `onCursor` whenever the last event id string changes.
 */
export class EventStreamParser {
  /**
   * @param {(type: string, data: string, id: string, fresh: boolean) => void} onEvent
   *   `fresh` tells whether the event's own block set the id.
   * @param {(id: string) => void} onCursor
   * @param {(ms: number) => void} onRetry
   */
  constructor(onEvent, onCursor, onRetry) {
    this.onEvent = onEvent;
    this.onCursor = onCursor;
    this.onRetry = onRetry;
    this.rest = "";
    this.skipLF = false;
    this.data = "";
    this.type = "";
    this.idBuffer = "";
    this.idSet = false;
    /** The last event id string: only a dispatch (a blank line) commits it. */
    this.lastEventId = "";
  }

  /** @param {string} chunk */
  feed(chunk) {
    const text = this.rest + chunk;
    let pos = 0;
    if (this.skipLF && text.length > 0) {
      if (text[0] === "\n") pos = 1;
      this.skipLF = false;
    }
    const terminator = /[\r\n]/g;
    for (;;) {
      terminator.lastIndex = pos;
      const found = terminator.exec(text);
      if (found === null) break;
      const end = found.index;
      let next = end + 1;
      if (text[end] === "\r") {
        if (next < text.length) {
          if (text[next] === "\n") next += 1;
        } else {
          // CR ends the chunk: a LF starting the next one belongs to it.
          this.skipLF = true;
        }
      }
      this.line(text.slice(pos, end));
      pos = next;
    }
    this.rest = text.slice(pos);
  }

  /** @param {string} line */
  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line[0] === ":") return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "data") {
      this.data += value + "\n";
    } else if (field === "event") {
      this.type = value;
    } else if (field === "id") {
      if (!value.includes("\0")) {
        this.idBuffer = value;
        this.idSet = true;
      }
    } else if (field === "retry") {
      if (/^[0-9]+$/.test(value)) this.onRetry(parseInt(value, 10));
    }
  }

  dispatch() {
    const fresh = this.idSet;
    this.idSet = false;
    const changed = this.lastEventId !== this.idBuffer;
    this.lastEventId = this.idBuffer;
    if (this.data === "") {
      this.type = "";
      if (changed) this.onCursor(this.lastEventId);
      return;
    }
    const data = this.data.slice(0, -1);
    const type = this.type || "message";
    this.data = "";
    this.type = "";
    this.onEvent(type, data, this.lastEventId, fresh);
  }

  /** A connection ended: an incomplete event is dropped, the id stays. */
  reset() {
    this.rest = "";
    this.skipLF = false;
    this.data = "";
    this.type = "";
    this.idBuffer = this.lastEventId;
    this.idSet = false;
  }
}

/**
 * One reconnecting stream, read with `fetch()`.
 *
 * Reconnects after the server's `retry:` (default 3 s) when a `200` stream ends
 * or the network fails; stops for good on any other answer, `204` included,
 * as `EventSource` does.
 */
class Stream {
  /**
   * @param {string} url the stream URL without the cursor.
   * @param {boolean} withCredentials
   * @param {string} lastEventId
   * @param {{event: (type: string, data: string, id: string, fresh: boolean) => void,
   *   cursor: (id: string) => void, state: (state: number, error: boolean) => void}} sink
   */
  constructor(url, withCredentials, lastEventId, sink) {
    this.url = url;
    this.credentials = withCredentials ? "include" : "same-origin";
    this.sink = sink;
    this.retry = DEFAULT_RETRY;
    this.stopped = false;
    this.controller = new AbortController();
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    this.parser = new EventStreamParser(
      (type, data, id, fresh) => {
        if (!this.stopped) sink.event(type, data, id, fresh);
      },
      (id) => {
        if (!this.stopped) sink.cursor(id);
      },
      (ms) => {
        this.retry = ms;
      },
    );
    this.parser.lastEventId = lastEventId;
    this.parser.idBuffer = lastEventId;
    void this.connect();
  }

  async connect() {
    const url = new URL(this.url);
    // EventSource sends the cursor as a header; the query parameter carries the
    // same value with no CORS preflight and no latin-1 limit on header values.
    if (this.parser.lastEventId !== "") url.searchParams.set("last_event_id", this.parser.lastEventId);
    /** @type {Response} */
    let response;
    try {
      response = await fetch(url.href, {
        headers: { Accept: "text/event-stream" },
        cache: "no-store",
        credentials: /** @type {RequestCredentials} */ (this.credentials),
        signal: this.controller.signal,
      });
    } catch {
      this.reconnectLater();
      return;
    }
    const type = response.headers.get("Content-Type") ?? "";
    if (response.status !== 200 || !/^text\/event-stream\s*(;|$)/i.test(type) || !response.body) {
      // 204 (revoked), 4xx, a wrong type: EventSource "fails the connection".
      void response.body?.cancel().catch(() => {});
      this.stop();
      this.sink.state(CLOSED, true);
      return;
    }
    if (this.stopped) return;
    this.sink.state(OPEN, false);
    const reader = response.body.getReader();
    const decoder = new TextDecoder("utf-8");
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done || this.stopped) break;
        this.parser.feed(decoder.decode(value, { stream: true }));
      }
    } catch {
      // A network error mid-stream: reconnect like the end of the stream.
    }
    this.reconnectLater();
  }

  reconnectLater() {
    if (this.stopped) return;
    this.parser.reset();
    this.sink.state(CONNECTING, true);
    this.timer = setTimeout(() => {
      if (!this.stopped) {
        this.controller = new AbortController();
        void this.connect();
      }
    }, this.retry);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.controller.abort();
  }
}

/** The ids of the last `MEMORY` delivered events, with the events themselves. */
class Memory {
  constructor() {
    /** @type {Delivered[]} */
    this.events = [];
    /** @type {Set<string>} */
    this.ids = new Set();
    /** How many events were forgotten. */
    this.dropped = 0;
  }

  /** @param {Delivered} event */
  add(event) {
    this.events.push(event);
    this.ids.add(event.id);
    if (this.events.length > MEMORY) {
      const gone = /** @type {Delivered} */ (this.events.shift());
      this.dropped += 1;
      if (!this.events.some((kept) => kept.id === gone.id)) this.ids.delete(gone.id);
    }
  }

  /**
   * The events after `id`, or null when `id` is not remembered.
   * @param {string} id
   * @returns {Delivered[] | null}
   */
  after(id) {
    for (let i = this.events.length - 1; i >= 0; i -= 1) {
      if (this.events[i].id === id) return this.events.slice(i + 1);
    }
    return null;
  }
}

function canShare() {
  return (
    typeof navigator !== "undefined" &&
    typeof navigator.locks?.request === "function" &&
    typeof BroadcastChannel === "function"
  );
}

function token() {
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

/**
 * A Flask-SSE-Push stream, shared with every other tab of this origin that asks
 * for the same URL and channels.
 *
 * Events are delivered in order, exactly once per event id, including across a
 * change of the tab that holds the stream.
 */
export class SSEPushClient {
  /**
   * @param {string} url the blueprint's URL, e.g. "/events".
   * @param {SSEPushOptions} [options]
   */
  constructor(url, options = {}) {
    const channels = [...new Set(options.channels ?? ["default"])].sort();
    const stream = new URL(url, globalThis.location?.href);
    for (const channel of channels) stream.searchParams.append("channel", channel);
    /** The stream URL, cursor aside. */
    this.url = stream.href;
    /** @type {readonly string[]} */
    this.channels = Object.freeze(channels);
    /** The id of the last event delivered, or the first-connect cursor. */
    this.lastEventId = options.lastEventId ?? "";
    /** Whether this client takes part in sharing (false in the fallback). */
    this.shared = (options.shared ?? true) && canShare();
    /** CONNECTING, OPEN or CLOSED, as `EventSource.readyState`. */
    this.readyState = CONNECTING;
    this.withCredentials = options.withCredentials ?? false;
    /** @type {Map<string, Set<SSEPushHandler>>} */
    this.handlers = new Map();
    this.memory = new Memory();
    this.token = token();
    /** @type {Stream | null} */
    this.stream = null;
    /** @type {"leader" | "follower" | "own" | "closed"} */
    this.role = this.shared ? "follower" : "own";
    /** Web Locks and BroadcastChannel are per origin; the URL names the channels too. */
    this.lockName = `flask-sse-push ${this.url}`;
    /** @type {BroadcastChannel | null} */
    this.channel = null;
    this.lastHeard = Date.now();
    /** @type {number | null} */
    this.pinged = null;
    /** Live relays held back until the leader's catch-up answer arrives. */
    /** @type {Relay[] | null} */
    this.pending = this.shared && this.lastEventId !== "" ? [] : null;
    /** The first-connect cursor, which a leader can still answer catch-ups from. */
    this.startId = this.lastEventId;
    /** The leader last asked for a catch-up. */
    /** @type {string | null} */
    this.asked = null;
    /** @type {(() => void) | null} */
    this.release = null;
    /** @type {AbortController | null} */
    this.waiting = null;
    this.generation = 0;
    this.frozen = false;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.beats = undefined;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.watchdog = undefined;
    this.onFreeze = () => this.freeze();
    this.onResume = () => this.resume();
    if (!this.shared) {
      this.stream = this.openStream();
      return;
    }
    this.channel = new BroadcastChannel(this.lockName);
    this.channel.onmessage = (message) => this.receive(/** @type {Relay} */ (message.data));
    this.watchdog = setInterval(() => this.watch(), WATCH_INTERVAL);
    globalThis.document?.addEventListener("freeze", this.onFreeze);
    globalThis.document?.addEventListener("resume", this.onResume);
    this.post({ k: "hello", from: this.token, since: this.pending ? this.lastEventId : null });
    this.elect(false);
  }

  /**
   * Call `handler` for events of `type`: "message" (unnamed), a named type,
   * "reset" (the gap signal), "open" or "error". The type "*" gets every event
   * the stream carries, whatever its type ("open" and "error" excepted).
   * @param {string} type
   * @param {SSEPushHandler} handler
   * @returns {this}
   */
  on(type, handler) {
    let set = this.handlers.get(type);
    if (!set) this.handlers.set(type, (set = new Set()));
    set.add(handler);
    return this;
  }

  /**
   * @param {string} type
   * @param {SSEPushHandler} handler
   * @returns {this}
   */
  off(type, handler) {
    this.handlers.get(type)?.delete(handler);
    return this;
  }

  /**
   * `EventSource`-style alias of {@link SSEPushClient.on}.
   * @param {string} type
   * @param {SSEPushHandler} handler
   */
  addEventListener(type, handler) {
    this.on(type, handler);
  }

  /**
   * `EventSource`-style alias of {@link SSEPushClient.off}.
   * @param {string} type
   * @param {SSEPushHandler} handler
   */
  removeEventListener(type, handler) {
    this.off(type, handler);
  }

  /** Stop listening in this client; a shared stream lives on for the others. */
  close() {
    if (this.role === "closed") return;
    this.finish();
    this.readyState = CLOSED;
  }

  // Internals below: not part of the public surface.

  finish() {
    this.role = "closed";
    this.stream?.stop();
    this.stream = null;
    if (!this.shared) return;
    clearInterval(this.beats);
    clearInterval(this.watchdog);
    this.waiting?.abort();
    this.release?.();
    this.release = null;
    this.channel?.close();
    globalThis.document?.removeEventListener("freeze", this.onFreeze);
    globalThis.document?.removeEventListener("resume", this.onResume);
  }

  openStream() {
    return new Stream(this.url, this.withCredentials, this.lastEventId, {
      event: (type, data, id, fresh) => {
        if (this.role === "leader") this.post({ k: "event", from: this.token, type, data, id, fresh });
        this.deliver(type, data, id, fresh);
      },
      cursor: (id) => {
        this.lastEventId = id;
        if (this.role === "leader") this.post({ k: "cursor", from: this.token, id });
      },
      state: (state, error) => {
        if (this.role === "leader") this.post({ k: "beat", from: this.token, state, error });
        this.setState(state, error);
        if (state === CLOSED && this.role === "leader") {
          // Followers must learn of the stop before one of them takes the lock.
          const release = this.release;
          this.release = null;
          this.finish();
          setTimeout(() => release?.(), STOP_DRAIN);
        } else if (state === CLOSED) {
          this.finish();
        }
      },
    });
  }

  /**
   * @param {string} type
   * @param {string} data
   * @param {string} id
   * @param {boolean} fresh
   */
  deliver(type, data, id, fresh) {
    if (this.role === "closed") return;
    if (fresh) {
      if (this.memory.ids.has(id)) return;
      this.memory.add({ type, data, id });
    }
    this.lastEventId = id;
    this.emit({ type, data, lastEventId: id });
  }

  /**
   * @param {number} state
   * @param {boolean} error
   */
  setState(state, error) {
    const was = this.readyState;
    this.readyState = state;
    if (state === OPEN && was !== OPEN) this.emit({ type: "open", data: "", lastEventId: this.lastEventId });
    if (error) this.emit({ type: "error", data: "", lastEventId: this.lastEventId });
  }

  /** @param {SSEPushEvent} event */
  emit(event) {
    const any = event.type === "open" || event.type === "error" ? [] : this.handlers.get("*") ?? [];
    for (const handler of [...(this.handlers.get(event.type) ?? []), ...any]) {
      try {
        handler(Object.freeze({ ...event }));
      } catch (error) {
        if (typeof reportError === "function") reportError(error);
        else console.error(error);
      }
    }
  }

  /** @param {Relay} message */
  post(message) {
    this.channel?.postMessage(message);
  }

  /**
   * Queue for the lock; `steal` takes it from a leader that stopped answering.
   * @param {boolean} steal
   */
  elect(steal) {
    if (this.role === "closed" || this.frozen) return;
    this.waiting?.abort();
    const generation = ++this.generation;
    const waiting = steal ? null : new AbortController();
    this.waiting = waiting;
    /** @type {LockOptions} */
    const options = steal ? { steal: true } : { signal: /** @type {AbortSignal} */ (waiting?.signal) };
    navigator.locks
      .request(this.lockName, options, () => {
        if (generation !== this.generation || this.role !== "follower") return undefined;
        return new Promise((resolve) => this.lead(resolve));
      })
      .catch(() => {
        // Aborted by close(), or the lock was stolen from us: step down.
        if (generation !== this.generation) return;
        this.stepDown();
        if (this.role === "follower") setTimeout(() => this.elect(false), 0);
      });
  }

  /** @param {(value?: unknown) => void} release */
  lead(release) {
    this.role = "leader";
    this.waiting = null;
    this.release = () => release();
    if (this.pending) {
      // The server replays from our cursor: the held-back relays come again.
      this.pending = null;
    }
    this.post({ k: "beat", from: this.token, state: this.readyState, error: false });
    this.beats = setInterval(() => {
      this.post({ k: "beat", from: this.token, state: this.readyState, error: false });
    }, BEAT_INTERVAL);
    this.stream = this.openStream();
  }

  stepDown() {
    if (this.role !== "leader") return;
    this.role = "follower";
    clearInterval(this.beats);
    this.stream?.stop();
    this.stream = null;
    this.release?.();
    this.release = null;
    this.lastHeard = Date.now();
  }

  freeze() {
    // A frozen tab runs no code: give the stream to another tab now.
    this.frozen = true;
    this.generation += 1;
    this.waiting?.abort();
    this.stepDown();
  }

  resume() {
    this.frozen = false;
    this.lastHeard = Date.now();
    this.elect(false);
  }

  watch() {
    if (this.role !== "follower" || this.frozen) return;
    const now = Date.now();
    if (now - this.lastHeard < SILENCE) return;
    if (this.pinged === null) {
      this.pinged = now;
      this.post({ k: "hello", from: this.token, since: null });
    } else if (now - this.pinged >= PING_WAIT) {
      // The holder of the lock is frozen or hung: Web Locks never release it.
      this.pinged = null;
      this.elect(true);
    }
  }

  /** @param {Relay} message */
  receive(message) {
    if (this.role === "closed") return;
    if (message.k === "hello") {
      if (this.role !== "leader") return;
      this.post({ k: "beat", from: this.token, state: this.readyState, error: false });
      if (message.since !== null) {
        const since = message.since;
        let events = since === this.lastEventId ? [] : this.memory.after(since);
        if (events === null && since === this.startId && this.memory.dropped === 0) {
          events = [...this.memory.events];
        }
        this.post({
          k: "catchup",
          from: this.token,
          to: message.from,
          known: events !== null,
          events: events ?? [],
        });
      }
      return;
    }
    if (this.role !== "follower") return;
    this.lastHeard = Date.now();
    this.pinged = null;
    if (message.k === "catchup") {
      if (message.to !== this.token || !this.pending) return;
      const held = this.pending;
      this.pending = null;
      if (!message.known) {
        const data = JSON.stringify({ last_event_id: this.lastEventId, reason: "unknown" });
        this.emit({ type: "reset", data, lastEventId: this.lastEventId });
      }
      for (const event of message.events) this.deliver(event.type, event.data, event.id, true);
      for (const relay of held) this.apply(relay);
      return;
    }
    if (this.pending) {
      if (message.k === "beat" && message.from !== this.asked) {
        // A leader we have not asked yet (it may have just taken over).
        this.asked = message.from;
        this.post({ k: "hello", from: this.token, since: this.lastEventId });
      }
      // Connection state is not part of the event order: report it now.
      if (message.k === "beat") this.apply(message);
      else this.pending.push(message);
      return;
    }
    this.apply(message);
  }

  /** @param {Relay} message */
  apply(message) {
    if (message.k === "event") {
      this.deliver(message.type, message.data, message.id, message.fresh);
    } else if (message.k === "cursor") {
      this.lastEventId = message.id;
    } else if (message.k === "beat") {
      if (message.state !== this.readyState || message.error) this.setState(message.state, message.error);
      if (message.state === CLOSED) this.finish();
    }
  }
}
