// @ts-check
/**
 * Flask-SSE-Push browser client: one server stream shared by every tab.
 *
 * Served by the blueprint at `<SSE_PUSH_URL_PREFIX>/client.js`. No dependencies.
 *
 * Four parts, each a class:
 * - `EventStreamParser` parses `text/event-stream` by the WHATWG HTML rules
 *   (§9.2.6);
 * - `Stream` reads one reconnecting stream with `fetch()`, and takes a stream
 *   that stops carrying bytes for longer than the server's keepalive allows for
 *   dead (a connection can die without FIN or RST);
 * - `TabRelay` shares one `Stream` among the clients of an origin that ask for
 *   the same URL and channels and hold the same session key: Web Locks elect
 *   the one that holds it, and it relays what it reads over a
 *   `BroadcastChannel` (the protocol: `RELAY`);
 * - `SSEPushClient`, the `EventSource`-like facade pages use.
 *
 * The stream is read with `fetch()` rather than `EventSource`, which cannot
 * report events of types nobody registered (the leader must relay them all),
 * cannot tell a `204` (revoked: stop for good) from a network error, and never
 * notices a connection that died silently. Every client remembers the ids it
 * has delivered, so when the leader closes, crashes or freezes, the next one
 * resumes from the last id it saw and nothing is missed or repeated.
 *
 * Sessions: the server gives each identity a key (`GET <prefix>/session-key`,
 * an HMAC the page cannot compute). The lock, the channel and every relay
 * message carry it, so tabs of different users of one browser never share a
 * stream, and a page that does not hold the key can neither join nor forge.
 * The key is fetched again before every connection the stream makes: a login
 * or logout in the meantime moves the client to the new session's tabs.
 *
 * @module
 */

export const CONNECTING = 0;
export const OPEN = 1;
export const CLOSED = 2;

/** Milliseconds before a reconnect when the server sent no `retry:`. */
const DEFAULT_RETRY = 3000;
/**
 * The comment by which the server tells its keepalive interval in
 * milliseconds (`: keepalive 15000`), in the stream's first chunk.
 */
const KEEPALIVE_COMMENT = /^ ?keepalive ([0-9]+)$/;
/**
 * Milliseconds of silence allowed on top of two keepalive intervals before a
 * stream is taken for dead: a busy server sends its keepalive late, and a
 * false alarm costs a reconnect.
 */
const STALL_SLACK = 2000;
/** How many delivered events each client remembers, for dedup and catch-up. */
const MEMORY = 1024;
/**
 * The last event id of a stream the server ended for good (a revoke): the
 * client stops at once instead of reconnecting to be told `204`.
 */
const STOP_ID = "flask-sse-push:stopped";

/**
 * How long a stream may carry no byte before it is taken for dead.
 * @param {number} keepalive the server's keepalive interval, in ms.
 */
function silenceLimit(keepalive) {
  return 2 * keepalive + STALL_SLACK;
}

/**
 * The relay protocol between the clients that share a stream, in one place:
 * the kinds of message they post on the `BroadcastChannel` (shapes: `Relay`),
 * and its timings in milliseconds.
 */
const RELAY = Object.freeze({
  /** Leader to all: an event the stream carried. */
  EVENT: /** @type {"event"} */ ("event"),
  /** Leader to all: the last event id changed without an event. */
  CURSOR: /** @type {"cursor"} */ ("cursor"),
  /** Leader to all: alive, and the stream's state. */
  BEAT: /** @type {"beat"} */ ("beat"),
  /** Any client to the leader: are you alive? With `since`: catch me up from this id. */
  HELLO: /** @type {"hello"} */ ("hello"),
  /** Leader to one client (`to`): the events after its `since`, or `known: false`. */
  CATCHUP: /** @type {"catchup"} */ ("catchup"),
  /** Between the leader's beats. */
  BEAT_INTERVAL: 500,
  /** Between a follower's checks that the leader still speaks. */
  WATCH_INTERVAL: 250,
  /**
   * Leader silence before a follower asks whether it is alive. Short is safe:
   * a leader in a background tab whose timers are throttled still answers the
   * question at once, so only a frozen or hung leader loses the lock.
   */
  SILENCE: 1000,
  /** How long a follower waits for that answer before it steals the lock. */
  PING_WAIT: 400,
  /** How long a stopped leader keeps the lock, so followers learn of the stop first. */
  STOP_DRAIN: 500,
});

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

/** @typedef {{type: string, data: string, id: string}} Delivered */

/**
 * A relay message as posted; the relay stamps `from` on each (see `Relay`).
 * @typedef {{k: "event", type: string, data: string, id: string, fresh: boolean}
 *   | {k: "cursor", id: string}
 *   | {k: "beat", state: number, error: boolean}
 *   | {k: "hello", since: string | null}
 *   | {k: "catchup", to: string, known: boolean, events: Delivered[]}} RelayBody
 */

/**
 * A relay message on the channel: stamped with its sender's token (`from`) and
 * the session key (`key`); a message without the key is dropped.
 * @typedef {RelayBody & {from: string, key: string}} Relay
 */

/**
 * Where a `Stream` reports what it reads.
 * @typedef {object} StreamSink
 * @property {(type: string, data: string, id: string, fresh: boolean) => void} event
 *   an event; `fresh` tells whether its own block set the id.
 * @property {(id: string) => void} cursor the last event id changed without an event.
 * @property {(state: number, error: boolean) => void} state CONNECTING, OPEN or CLOSED.
 */

/**
 * Asked before each connection a `Stream` makes, and after a `401` or `403`:
 * false means the page's session changed and the stream must end, silently
 * (its client moves to the new session's tabs).
 * @typedef {() => Promise<boolean>} SessionCheck
 */

/**
 * Incremental `text/event-stream` parser (WHATWG HTML §9.2.6).
 *
 * Feed it decoded text in chunks of any size; it calls `onEvent` for each
 * dispatched event, `onCursor` whenever the last event id string changes
 * without an event, `onRetry` for a valid `retry:` and `onComment` with the
 * text after the colon of each comment line.
 */
export class EventStreamParser {
  #onEvent;
  #onCursor;
  #onRetry;
  #onComment;
  /** An incomplete line, kept until its terminator arrives. */
  #rest = "";
  /** The previous chunk ended with CR: a LF starting the next one belongs to it. */
  #skipLF = false;
  #data = "";
  #type = "";
  #idBuffer = "";
  #idSet = false;
  /** The last event id string: only a dispatch (a blank line) commits it. */
  #lastEventId = "";

  /**
   * @param {(type: string, data: string, id: string, fresh: boolean) => void} onEvent
   *   `fresh` tells whether the event's own block set the id.
   * @param {(id: string) => void} onCursor
   * @param {(ms: number) => void} onRetry
   * @param {(text: string) => void} [onComment]
   */
  constructor(onEvent, onCursor, onRetry, onComment = () => {}) {
    this.#onEvent = onEvent;
    this.#onCursor = onCursor;
    this.#onRetry = onRetry;
    this.#onComment = onComment;
  }

  /** The last event id string. */
  get lastEventId() {
    return this.#lastEventId;
  }

  /** @param {string} chunk */
  feed(chunk) {
    const text = this.#rest + chunk;
    let pos = 0;
    if (this.#skipLF && text.length > 0) {
      if (text[0] === "\n") pos = 1;
      this.#skipLF = false;
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
          this.#skipLF = true;
        }
      }
      this.#line(text.slice(pos, end));
      pos = next;
    }
    this.#rest = text.slice(pos);
  }

  /**
   * A connection ended: an incomplete event is dropped, the id stays (or
   * becomes `lastEventId`, to start from a cursor).
   * @param {string} [lastEventId]
   */
  reset(lastEventId = this.#lastEventId) {
    this.#rest = "";
    this.#skipLF = false;
    this.#data = "";
    this.#type = "";
    this.#lastEventId = lastEventId;
    this.#idBuffer = lastEventId;
    this.#idSet = false;
  }

  /** @param {string} line */
  #line(line) {
    if (line === "") {
      this.#dispatch();
      return;
    }
    if (line[0] === ":") {
      this.#onComment(line.slice(1));
      return;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "data") {
      this.#data += value + "\n";
    } else if (field === "event") {
      this.#type = value;
    } else if (field === "id") {
      if (!value.includes("\0")) {
        this.#idBuffer = value;
        this.#idSet = true;
      }
    } else if (field === "retry") {
      if (/^[0-9]+$/.test(value)) this.#onRetry(parseInt(value, 10));
    }
  }

  #dispatch() {
    const fresh = this.#idSet;
    this.#idSet = false;
    const changed = this.#lastEventId !== this.#idBuffer;
    this.#lastEventId = this.#idBuffer;
    if (this.#data === "") {
      this.#type = "";
      if (changed) this.#onCursor(this.#lastEventId);
      return;
    }
    const data = this.#data.slice(0, -1);
    const type = this.#type || "message";
    this.#data = "";
    this.#type = "";
    this.#onEvent(type, data, this.#lastEventId, fresh);
  }
}

/**
 * One reconnecting stream, read with `fetch()`.
 *
 * Reconnects after the server's `retry:` (default 3 s) when a `200` stream ends,
 * the network fails, or the stream carries no byte for `silenceLimit()` of the
 * keepalive interval the server announced; stops for good on any other answer,
 * `204` included, as `EventSource` does, and at once, without a request, on
 * the stop id (`STOP_ID`) the server ends a revoked stream with.
 */
class Stream {
  #url;
  /** @type {RequestCredentials} */
  #credentials;
  #sink;
  /** @type {SessionCheck | null} */
  #check;
  #parser;
  #retry = DEFAULT_RETRY;
  /** @type {number | null} The server's keepalive interval (ms), once it told it. */
  #keepalive = null;
  #stopped = false;
  #controller = new AbortController();
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #reconnect = undefined;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #watchdog = undefined;
  /** When the last byte arrived (or the connection started), `performance.now()`. */
  #heardAt = 0;

  /**
   * @param {string} url the stream URL without the cursor.
   * @param {boolean} withCredentials
   * @param {string} lastEventId
   * @param {StreamSink} sink
   * @param {SessionCheck | null} [check]
   */
  constructor(url, withCredentials, lastEventId, sink, check = null) {
    this.#url = url;
    this.#credentials = withCredentials ? "include" : "same-origin";
    this.#sink = sink;
    this.#check = check;
    this.#parser = new EventStreamParser(
      (type, data, id, fresh) => {
        if (this.#stopped) return;
        if (id === STOP_ID) this.#halt();
        else sink.event(type, data, id, fresh);
      },
      (id) => {
        if (this.#stopped) return;
        if (id === STOP_ID) this.#halt();
        else sink.cursor(id);
      },
      (ms) => {
        this.#retry = ms;
      },
      (text) => {
        const found = KEEPALIVE_COMMENT.exec(text);
        if (found) this.#keepalive = parseInt(found[1], 10);
      },
    );
    this.#parser.reset(lastEventId);
    void this.#connect();
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#reconnect);
    clearTimeout(this.#watchdog);
    this.#controller.abort();
  }

  /** Ended for good by the server: stop, say so, and make no other request. */
  #halt() {
    this.stop();
    this.#sink.state(CLOSED, true);
  }

  async #connect() {
    // The page's session may have changed since the last connection (a
    // logout, a login in another tab): this stream's tabs may not get it.
    if (this.#check !== null && !(await this.#check())) return;
    if (this.#stopped) return;
    const controller = new AbortController();
    this.#controller = controller;
    const url = new URL(this.#url);
    // EventSource sends the cursor as a header; the query parameter carries the
    // same value with no CORS preflight and no latin-1 limit on header values.
    const cursor = this.#parser.lastEventId;
    if (cursor !== "") url.searchParams.set("last_event_id", cursor);
    // Known from an earlier connection: a connect that hangs is dead too.
    this.#heard();
    /** @type {Response} */
    let response;
    try {
      response = await fetch(url.href, {
        headers: { Accept: "text/event-stream" },
        cache: "no-store",
        credentials: this.#credentials,
        signal: controller.signal,
      });
    } catch {
      this.#reconnectLater();
      return;
    }
    if (this.#stopped) return;
    const type = response.headers.get("Content-Type") ?? "";
    if (response.status !== 200 || !/^text\/event-stream\s*(;|$)/i.test(type) || !response.body) {
      // 204 (revoked), 4xx, a wrong type: EventSource "fails the connection".
      void response.body?.cancel().catch(() => {});
      // Refused for another user than this stream's tabs: theirs is over, not the client.
      const refused = response.status === 401 || response.status === 403;
      if (refused && this.#check !== null && !(await this.#check())) return;
      if (this.#stopped) return;
      this.stop();
      this.#sink.state(CLOSED, true);
      return;
    }
    this.#sink.state(OPEN, false);
    const reader = response.body.getReader();
    const decoder = new TextDecoder("utf-8");
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done || this.#stopped) break;
        this.#parser.feed(decoder.decode(value, { stream: true }));
        this.#heard();
      }
    } catch {
      // A network error mid-stream, or the watchdog's abort: reconnect like the
      // end of the stream.
    }
    this.#reconnectLater();
  }

  #reconnectLater() {
    clearTimeout(this.#watchdog);
    this.#watchdog = undefined;
    if (this.#stopped) return;
    this.#parser.reset();
    this.#sink.state(CONNECTING, true);
    this.#reconnect = setTimeout(() => {
      if (!this.#stopped) void this.#connect();
    }, this.#retry);
  }

  /** Bytes arrived, or a connection starts: the silence starts over. */
  #heard() {
    this.#heardAt = performance.now();
    // One timer per silence limit, not one per chunk: it re-arms itself.
    if (this.#keepalive !== null && this.#watchdog === undefined) {
      this.#watch(silenceLimit(this.#keepalive), false);
    }
  }

  /**
   * Look again in `delay` ms whether the stream is silent for too long.
   * @param {number} delay
   * @param {boolean} suspect the last look found it silent.
   */
  #watch(delay, suspect) {
    this.#watchdog = setTimeout(() => {
      this.#watchdog = undefined;
      if (this.#stopped || this.#keepalive === null) return;
      const left = silenceLimit(this.#keepalive) - (performance.now() - this.#heardAt);
      if (left > 0) {
        this.#watch(left, false);
      } else if (!suspect) {
        // A page that ran no code for a while (a blocked event loop, a machine
        // waking from sleep) runs this timer before reads that were waiting:
        // give them one turn before judging.
        this.#watch(0, true);
      } else {
        this.#controller.abort();
      }
    }, delay);
  }
}

/** The last `MEMORY` delivered events, for dedup by id and for catch-up. */
class Memory {
  /** @type {Delivered[]} */
  #events = [];
  /** @type {Set<string>} */
  #ids = new Set();
  /** How many events were forgotten. */
  #dropped = 0;
  /** The first-connect cursor: the first remembered event came right after it. */
  #startId;

  /** @param {string} startId */
  constructor(startId) {
    this.#startId = startId;
  }

  /** @param {string} id */
  has(id) {
    return this.#ids.has(id);
  }

  /** @param {Delivered} event */
  add(event) {
    this.#events.push(event);
    this.#ids.add(event.id);
    if (this.#events.length > MEMORY) {
      const gone = /** @type {Delivered} */ (this.#events.shift());
      this.#dropped += 1;
      if (!this.#events.some((kept) => kept.id === gone.id)) this.#ids.delete(gone.id);
    }
  }

  /**
   * The events after `id`, or null when they are not all remembered.
   * @param {string} id
   * @returns {Delivered[] | null}
   */
  after(id) {
    for (let i = this.#events.length - 1; i >= 0; i -= 1) {
      if (this.#events[i].id === id) return this.#events.slice(i + 1);
    }
    if (id === this.#startId && this.#dropped === 0) return [...this.#events];
    return null;
  }
}

/**
 * What a `TabRelay` needs of the client it serves.
 * @typedef {object} RelayHost
 * @property {(sink: StreamSink, check: SessionCheck) => Stream} open open the server stream from the client's cursor.
 * @property {StreamSink} sink where events (deduplicated there), cursors and states go.
 * @property {() => void} lost the leader cannot catch this client up: a gap.
 * @property {() => string} lastEventId
 * @property {() => number} readyState
 * @property {(since: string) => Delivered[] | null} after the events after `since`, or null.
 * @property {SessionCheck} check whether the page's session is still the relay's.
 */

/**
 * One server stream shared by the clients of an origin that ask for the same
 * URL and channels (one per `name`), each client its own `TabRelay`.
 *
 * Election: every relay queues for the Web Lock `name`; its holder is the
 * leader, holds the stream and relays what it reads. A leader that closes or
 * crashes loses the lock by itself; one that hangs or freezes keeps it, so a
 * follower that hears no beat for `RELAY.SILENCE` asks (`hello`), and without
 * an answer in `RELAY.PING_WAIT` steals the lock.
 *
 * Catch-up: a client started from a cursor holds live relays back, asks each
 * new leader for what came after its cursor (`hello` with `since`), and
 * delivers the answer (`catchup`) before them. A leader answers each client
 * (`from`) once, from its memory only, so no message can make it re-send more.
 *
 * Sessions: `name` holds the session key, and every message carries it
 * (`key`); one without it is dropped, whatever the channel it came on.
 */
class TabRelay {
  #host;
  #name;
  #key;
  #locks;
  #channel;
  #token = Math.random().toString(36).slice(2) + Date.now().toString(36);
  /** @type {"leader" | "follower" | "closed"} */
  #role = "follower";
  /** @type {Stream | null} */
  #stream = null;
  /** @type {(() => void) | null} Gives the lock back. */
  #release = null;
  /** @type {AbortController | null} Leaves the lock's queue. */
  #waiting = null;
  /** Counts lock requests: a request's callback that finds a newer one does nothing. */
  #generation = 0;
  #frozen = false;
  /** @type {ReturnType<typeof setInterval> | undefined} */
  #beats = undefined;
  /** @type {ReturnType<typeof setInterval> | undefined} */
  #watchdog = undefined;
  #lastHeard = Date.now();
  /** @type {number | null} When we asked a silent leader whether it is alive. */
  #pinged = null;
  /** @type {Relay[] | null} Live relays held back until the catch-up answer arrives. */
  #pending;
  /** @type {string | null} The leader last asked for a catch-up. */
  #asked = null;
  /** @type {Set<string>} The clients this leader has caught up: each once. */
  #answered = new Set();
  #onFreeze = () => this.#freeze();
  #onResume = () => this.#resume();

  /**
   * @param {string} name the lock's and the `BroadcastChannel`'s name, the key in it.
   * @param {string} key the session key every message must carry.
   * @param {RelayHost} host
   * @param {string | null} since the cursor to be caught up from, if any.
   */
  constructor(name, key, host, since) {
    this.#host = host;
    this.#name = name;
    this.#key = key;
    this.#locks = navigator.locks;
    this.#channel = new BroadcastChannel(name);
    this.#channel.onmessage = (message) => this.#receive(message.data);
    this.#pending = since === null ? null : [];
    this.#watchdog = setInterval(() => this.#watch(), RELAY.WATCH_INTERVAL);
    globalThis.document?.addEventListener("freeze", this.#onFreeze);
    globalThis.document?.addEventListener("resume", this.#onResume);
    this.#post({ k: RELAY.HELLO, since });
    this.#elect(false);
  }

  get role() {
    return this.#role;
  }

  /**
   * Leave: stop the stream, give the lock back (after `drain` ms).
   * @param {number} [drain]
   */
  close(drain = 0) {
    if (this.#role === "closed") return;
    this.#role = "closed";
    this.#stream?.stop();
    this.#stream = null;
    clearInterval(this.#beats);
    clearInterval(this.#watchdog);
    this.#waiting?.abort();
    const release = this.#release;
    this.#release = null;
    if (drain > 0) setTimeout(() => release?.(), drain);
    else release?.();
    this.#channel.close();
    globalThis.document?.removeEventListener("freeze", this.#onFreeze);
    globalThis.document?.removeEventListener("resume", this.#onResume);
  }

  /**
   * Every message leaves through here, stamped with its sender and the
   * session key (checked in `#receive`).
   * @param {RelayBody} body
   */
  #post(body) {
    /** @type {Relay} */
    const message = { ...body, from: this.#token, key: this.#key };
    this.#channel.postMessage(message);
  }

  #beat() {
    this.#post({ k: RELAY.BEAT, state: this.#host.readyState(), error: false });
  }

  /**
   * Queue for the lock; `steal` takes it from a leader that stopped answering.
   * @param {boolean} steal
   */
  #elect(steal) {
    if (this.#role === "closed" || this.#frozen) return;
    this.#waiting?.abort();
    const generation = ++this.#generation;
    const waiting = steal ? null : new AbortController();
    this.#waiting = waiting;
    /** @type {LockOptions} */
    const options = waiting ? { signal: waiting.signal } : { steal: true };
    this.#locks
      .request(this.#name, options, () => {
        if (generation !== this.#generation || this.#role !== "follower") return undefined;
        return new Promise((resolve) => this.#lead(() => resolve(undefined)));
      })
      .catch(() => {
        // Aborted by close(), or the lock was stolen from us: step down.
        if (generation !== this.#generation) return;
        this.#stepDown();
        if (this.#role === "follower") setTimeout(() => this.#elect(false), 0);
      });
  }

  /** @param {() => void} release */
  #lead(release) {
    this.#role = "leader";
    this.#waiting = null;
    this.#release = release;
    // The server replays from our cursor: held-back relays come again.
    this.#pending = null;
    this.#beat();
    this.#beats = setInterval(() => this.#beat(), RELAY.BEAT_INTERVAL);
    const host = this.#host;
    this.#stream = host.open(
      {
        event: (type, data, id, fresh) => {
          this.#post({ k: RELAY.EVENT, type, data, id, fresh });
          host.sink.event(type, data, id, fresh);
        },
        cursor: (id) => {
          this.#post({ k: RELAY.CURSOR, id });
          host.sink.cursor(id);
        },
        state: (state, error) => {
          this.#post({ k: RELAY.BEAT, state, error });
          // Stopped for good: followers must learn of it before one takes the lock.
          if (state === CLOSED) this.close(RELAY.STOP_DRAIN);
          host.sink.state(state, error);
        },
      },
      host.check,
    );
  }

  #stepDown() {
    if (this.#role !== "leader") return;
    this.#role = "follower";
    clearInterval(this.#beats);
    this.#stream?.stop();
    this.#stream = null;
    this.#release?.();
    this.#release = null;
    this.#lastHeard = Date.now();
  }

  #freeze() {
    // A frozen tab runs no code: give the stream to another tab now.
    this.#frozen = true;
    this.#generation += 1;
    this.#waiting?.abort();
    this.#stepDown();
  }

  #resume() {
    this.#frozen = false;
    this.#lastHeard = Date.now();
    this.#elect(false);
  }

  #watch() {
    if (this.#role !== "follower" || this.#frozen) return;
    const now = Date.now();
    if (now - this.#lastHeard < RELAY.SILENCE) return;
    if (this.#pinged === null) {
      this.#pinged = now;
      this.#post({ k: RELAY.HELLO, since: null });
    } else if (now - this.#pinged >= RELAY.PING_WAIT) {
      // The holder of the lock is frozen or hung: Web Locks never release it.
      this.#pinged = null;
      this.#elect(true);
    }
  }

  /**
   * Every message enters through here: one without this session's key is
   * not from a tab of this session, and is dropped.
   * @param {unknown} data
   */
  #receive(data) {
    if (this.#role === "closed") return;
    if (typeof data !== "object" || data === null || /** @type {{key?: unknown}} */ (data).key !== this.#key) return;
    const message = /** @type {Relay} */ (data);
    if (message.k === RELAY.HELLO) {
      if (this.#role === "leader") this.#answer(message.from, message.since);
      return;
    }
    if (this.#role !== "follower") return;
    this.#lastHeard = Date.now();
    this.#pinged = null;
    if (message.k === RELAY.CATCHUP) {
      if (message.to === this.#token) this.#caughtUp(message.known, message.events);
    } else if (this.#pending === null) {
      this.#apply(message);
    } else if (message.k === RELAY.BEAT) {
      if (message.from !== this.#asked) {
        // A leader we have not asked yet (it may have just taken over).
        this.#asked = message.from;
        this.#post({ k: RELAY.HELLO, since: this.#host.lastEventId() });
      }
      // Connection state is not part of the event order: report it now.
      this.#apply(message);
    } else {
      this.#pending.push(message);
    }
  }

  /**
   * As leader: say we are alive, and catch `to` up from `since` if it asks.
   * @param {string} to
   * @param {string | null} since
   */
  #answer(to, since) {
    this.#beat();
    if (since === null || this.#answered.has(to)) return;
    this.#answered.add(to);
    const events = since === this.#host.lastEventId() ? [] : this.#host.after(since);
    this.#post({ k: RELAY.CATCHUP, to, known: events !== null, events: events ?? [] });
  }

  /**
   * @param {boolean} known
   * @param {Delivered[]} events
   */
  #caughtUp(known, events) {
    const held = this.#pending;
    if (held === null) return;
    this.#pending = null;
    if (!known) this.#host.lost();
    for (const event of events) this.#host.sink.event(event.type, event.data, event.id, true);
    for (const relay of held) this.#apply(relay);
  }

  /** @param {Relay} message */
  #apply(message) {
    const sink = this.#host.sink;
    if (message.k === RELAY.EVENT) {
      sink.event(message.type, message.data, message.id, message.fresh);
    } else if (message.k === RELAY.CURSOR) {
      sink.cursor(message.id);
    } else if (message.k === RELAY.BEAT) {
      const changed = message.state !== this.#host.readyState();
      if (changed || message.error || message.state === CLOSED) sink.state(message.state, message.error);
    }
  }
}

function canShare() {
  return (
    typeof navigator !== "undefined" &&
    typeof navigator.locks?.request === "function" &&
    typeof BroadcastChannel === "function"
  );
}

/**
 * The page's session key, from `GET <prefix>/session-key` next to the stream
 * URL; null when the server gives none (not Flask-SSE-Push, or an older one)
 * or cannot be reached.
 * @param {string} url the session key's URL.
 * @param {RequestCredentials} credentials
 * @returns {Promise<string | null>}
 */
async function fetchSessionKey(url, credentials) {
  try {
    const response = await fetch(url, { cache: "no-store", credentials, headers: { Accept: "application/json" } });
    if (response.status !== 200) return null;
    const body = await response.json();
    return typeof body?.key === "string" && body.key !== "" ? body.key : null;
  } catch {
    return null;
  }
}

/**
 * A Flask-SSE-Push stream, shared with every other tab of this origin that asks
 * for the same URL and channels, in the same session (the same user).
 *
 * Events are delivered in order, exactly once per event id, including across a
 * change of the tab that holds the stream.
 */
export class SSEPushClient {
  #url;
  /** @type {readonly string[]} */
  #channels;
  #lastEventId;
  #withCredentials;
  #readyState = CONNECTING;
  /** @type {Map<string, Set<SSEPushHandler>>} */
  #handlers = new Map();
  #memory;
  /** @type {TabRelay | null} */
  #relay = null;
  /** @type {Stream | null} The stream of a client that does not share. */
  #stream = null;
  /** Sharing, or fetching the session key to share (false: the fallback). */
  #sharing = false;
  /** @type {string | null} The session key of the tabs this client shares with. */
  #key = null;
  /** The session key's URL: `session-key` under the stream's path. */
  #keyUrl;
  #closed = false;
  /** @type {StreamSink} */
  #sink = {
    event: (type, data, id, fresh) => this.#deliver(type, data, id, fresh),
    cursor: (id) => {
      this.#lastEventId = id;
    },
    state: (state, error) => this.#setState(state, error),
  };

  /**
   * @param {string} url the blueprint's URL, e.g. "/events".
   * @param {SSEPushOptions} [options]
   */
  constructor(url, options = {}) {
    const channels = [...new Set(options.channels ?? ["default"])].sort();
    const stream = new URL(url, globalThis.location?.href);
    for (const channel of channels) stream.searchParams.append("channel", channel);
    this.#url = stream.href;
    this.#channels = Object.freeze(channels);
    this.#lastEventId = options.lastEventId ?? "";
    this.#withCredentials = options.withCredentials ?? false;
    this.#memory = new Memory(this.#lastEventId);
    const keyUrl = new URL(stream.href);
    keyUrl.search = "";
    keyUrl.hash = "";
    keyUrl.pathname = `${keyUrl.pathname.replace(/\/+$/, "")}/session-key`;
    this.#keyUrl = keyUrl.href;
    if (!((options.shared ?? true) && canShare())) {
      this.#stream = this.#open(this.#sink);
      return;
    }
    this.#sharing = true;
    void this.#join();
  }

  /** Fetch the session key, then share among the tabs that hold it (or not at all). */
  async #join() {
    const key = await fetchSessionKey(this.#keyUrl, this.#credentials());
    if (this.#closed) return;
    if (key === null) {
      // No key, no way to tell sessions apart: share with nobody.
      this.#sharing = false;
      this.#stream = this.#open(this.#sink);
      return;
    }
    this.#share(key);
  }

  /**
   * Join the tabs of session `key` (leaving those of another session).
   * @param {string} key
   */
  #share(key) {
    this.#key = key;
    this.#relay?.close();
    const since = this.#lastEventId === "" ? null : this.#lastEventId;
    // Web Locks and BroadcastChannel are per origin; the key names the session,
    // the URL the channels.
    this.#relay = new TabRelay(
      `flask-sse-push ${key} ${this.#url}`,
      key,
      {
        open: (sink, check) => this.#open(sink, check),
        sink: this.#sink,
        lost: () => {
          const data = JSON.stringify({ last_event_id: this.#lastEventId, reason: "unknown" });
          this.#emit({ type: "reset", data, lastEventId: this.#lastEventId });
        },
        lastEventId: () => this.#lastEventId,
        readyState: () => this.#readyState,
        after: (since) => this.#memory.after(since),
        check: () => this.#checkSession(key),
      },
      since,
    );
  }

  /**
   * Before a connection of the shared stream: is the page's session still
   * `key`? If it changed, this client moves to the new session's tabs.
   * @param {string} key
   * @returns {Promise<boolean>}
   */
  async #checkSession(key) {
    const now = await fetchSessionKey(this.#keyUrl, this.#credentials());
    // Unreachable: the stream's own connection will tell.
    if (now === null) return true;
    // A relay this client has left already (two checks crossed) connects nothing.
    if (now === key && key === this.#key) return true;
    if (!this.#closed && now !== this.#key) this.#share(now);
    return false;
  }

  /** @returns {RequestCredentials} */
  #credentials() {
    return this.#withCredentials ? "include" : "same-origin";
  }

  /** The stream URL, cursor aside. */
  get url() {
    return this.#url;
  }

  get channels() {
    return this.#channels;
  }

  /** The id of the last event delivered, or the first-connect cursor. */
  get lastEventId() {
    return this.#lastEventId;
  }

  /** Whether this client takes part in sharing (false in the fallback). */
  get shared() {
    return this.#sharing;
  }

  get withCredentials() {
    return this.#withCredentials;
  }

  /** CONNECTING, OPEN or CLOSED, as `EventSource.readyState`. */
  get readyState() {
    return this.#readyState;
  }

  /** @returns {"leader" | "follower" | "own" | "closed"} */
  get role() {
    if (this.#closed) return "closed";
    if (!this.#sharing) return "own";
    // Until the session key arrives, a client holds no stream.
    return this.#relay?.role ?? "follower";
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
    let set = this.#handlers.get(type);
    if (!set) this.#handlers.set(type, (set = new Set()));
    set.add(handler);
    return this;
  }

  /**
   * @param {string} type
   * @param {SSEPushHandler} handler
   * @returns {this}
   */
  off(type, handler) {
    this.#handlers.get(type)?.delete(handler);
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
    this.#finish();
    this.#readyState = CLOSED;
  }

  #finish() {
    if (this.#closed) return;
    this.#closed = true;
    this.#stream?.stop();
    this.#stream = null;
    this.#relay?.close();
  }

  /**
   * @param {StreamSink} sink
   * @param {SessionCheck | null} [check]
   */
  #open(sink, check = null) {
    return new Stream(this.#url, this.#withCredentials, this.#lastEventId, sink, check);
  }

  /**
   * @param {string} type
   * @param {string} data
   * @param {string} id
   * @param {boolean} fresh
   */
  #deliver(type, data, id, fresh) {
    if (this.#closed) return;
    if (fresh) {
      if (this.#memory.has(id)) return;
      this.#memory.add({ type, data, id });
    }
    this.#lastEventId = id;
    this.#emit({ type, data, lastEventId: id });
  }

  /**
   * @param {number} state
   * @param {boolean} error
   */
  #setState(state, error) {
    const was = this.#readyState;
    this.#readyState = state;
    if (state === OPEN && was !== OPEN) this.#emit({ type: "open", data: "", lastEventId: this.#lastEventId });
    if (error) this.#emit({ type: "error", data: "", lastEventId: this.#lastEventId });
    if (state === CLOSED) this.#finish();
  }

  /** @param {SSEPushEvent} event */
  #emit(event) {
    const any = event.type === "open" || event.type === "error" ? [] : this.#handlers.get("*") ?? [];
    for (const handler of [...(this.#handlers.get(event.type) ?? []), ...any]) {
      try {
        handler(Object.freeze({ ...event }));
      } catch (error) {
        if (typeof reportError === "function") reportError(error);
        else console.error(error);
      }
    }
  }
}
