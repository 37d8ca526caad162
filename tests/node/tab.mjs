// One browser tab for the node tests: an SSEPushClient in a worker thread, with
// a Web Locks stand-in that asks the main thread's LockManager (harness.mjs).
import { parentPort, workerData } from "node:worker_threads";
import { readFileSync } from "node:fs";

function abortError() {
  return new DOMException("The lock request was aborted.", "AbortError");
}

/** `navigator.locks` of this tab: request() with `signal` and `steal`, as the client uses it. */
class Locks {
  #port;
  #next = 0;
  /** id -> {name, callback, resolve, reject, granted} */
  #requests = new Map();

  constructor(port) {
    this.#port = port;
    port.on("message", (message) => this.#receive(message));
  }

  request(name, options, callback) {
    const id = ++this.#next;
    return new Promise((resolve, reject) => {
      const signal = options.signal;
      if (signal?.aborted) return reject(abortError());
      this.#requests.set(id, { name, callback, resolve, reject, granted: false });
      signal?.addEventListener("abort", () => {
        const request = this.#requests.get(id);
        if (!request || request.granted) return;
        this.#requests.delete(id);
        this.#port.postMessage({ op: "abort", id, name });
        reject(abortError());
      });
      this.#port.postMessage({ op: "request", id, name, steal: Boolean(options.steal) });
    });
  }

  #receive({ op, id }) {
    const request = this.#requests.get(id);
    if (op === "stolen") {
      if (!request) return;
      this.#requests.delete(id);
      request.reject(abortError());
    } else if (op === "granted") {
      if (!request) return; // aborted meanwhile: the main thread queue dropped it too
      request.granted = true;
      Promise.resolve()
        .then(() => request.callback({ name: request.name, mode: "exclusive" }))
        .then(
          (value) => {
            this.#done(id, request);
            request.resolve(value);
          },
          (error) => {
            this.#done(id, request);
            request.reject(error);
          },
        );
    }
  }

  #done(id, request) {
    if (this.#requests.get(id) !== request) return; // stolen: nothing to release
    this.#requests.delete(id);
    this.#port.postMessage({ op: "release", id, name: request.name });
  }
}

// The page, for its lifecycle events ("freeze", "resume").
Object.defineProperty(globalThis, "document", { value: new EventTarget(), configurable: true });
Object.defineProperty(globalThis, "navigator", {
  value: { locks: new Locks(workerData.locks) },
  configurable: true,
});
const source = readFileSync(new URL(workerData.client, "file:///"), "utf8");
const { SSEPushClient } = await import(`data:text/javascript;base64,${Buffer.from(source).toString("base64")}`);

const got = [];
const client = new SSEPushClient(workerData.url, workerData.options);
for (const type of ["message", "created", "reset", "open", "error"]) {
  client.on(type, (event) => got.push([event.type, event.data, event.lastEventId]));
}

parentPort.on("message", ({ op, seq, ms }) => {
  const reply = (extra = {}) =>
    parentPort.postMessage({ seq, role: client.role, readyState: client.readyState, url: client.url, got, ...extra });
  if (op === "state") {
    reply();
  } else if (op === "close") {
    client.close();
    reply();
  } else if (op === "freeze" || op === "resume") {
    document.dispatchEvent(new Event(op));
    reply();
  } else if (op === "hang") {
    // A hung tab: its event loop runs nothing, its lock stays held.
    reply();
    const end = Date.now() + ms;
    while (Date.now() < end);
  }
});
