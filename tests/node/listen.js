// Listen to an SSE URL with the Node `eventsource` package and print what
// happens as JSON lines on stdout: {"kind": "open"}, {"kind": "error", ...},
// {"kind": "event", "type", "data", "lastEventId"}.
// Usage: node listen.js URL EVENT_COUNT [INITIAL_LAST_EVENT_ID]
// Exits 0 after EVENT_COUNT events, 2 once the client has stopped for good,
// 3 after 30 s.
"use strict";
const EventSource = require("eventsource");

const [url, countText, initialId] = process.argv.slice(2);
const wanted = Number(countText);
const init = initialId === undefined ? {} : { headers: { "Last-Event-ID": initialId } };
const source = new EventSource(url, init);
let seen = 0;

function say(record) {
  process.stdout.write(JSON.stringify(record) + "\n");
}

function onEvent(message) {
  say({ kind: "event", type: message.type, data: message.data, lastEventId: message.lastEventId });
  seen += 1;
  if (seen >= wanted) {
    source.close();
    process.exit(0);
  }
}

source.onopen = () => say({ kind: "open" });
source.onerror = (error) => {
  say({ kind: "error", status: error.status === undefined ? null : error.status, readyState: source.readyState });
  if (source.readyState === EventSource.CLOSED) {
    process.exit(2);
  }
};
source.onmessage = onEvent;
source.addEventListener("reset", onEvent);
setTimeout(() => process.exit(3), 30000);
