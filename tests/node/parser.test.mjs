// client.js's text/event-stream parser (WHATWG HTML 9.2.6), fed in chunks.
// (The browser tests compare it with the spec-written parser in every chunking.)
import assert from "node:assert/strict";
import { test } from "node:test";

import { loadClient } from "./harness.mjs";

const { EventStreamParser } = await loadClient();

function parse(chunks, lastEventId) {
  const out = [];
  const parser = new EventStreamParser(
    (type, data, id, fresh) => out.push(["event", type, data, id, fresh]),
    (id) => out.push(["cursor", id]),
    (ms) => out.push(["retry", ms]),
    (text) => out.push(["comment", text]),
  );
  if (lastEventId !== undefined) parser.reset(lastEventId);
  for (const chunk of chunks) parser.feed(chunk);
  return { out, parser };
}

test("a CRLF split across chunks ends one line, not two", () => {
  const { out } = parse(["data: a\r", "\ndata: b\r", "\n\r", "\n"]);
  assert.deepEqual(out, [["event", "message", "a\nb", "", false]]);
});

test("comments reach onComment with the text after the colon; the first chunk's keepalive", () => {
  const { out } = parse(["retry: 300\n: keepalive 500\n\n: keepalive\n\n"]);
  assert.deepEqual(out, [["retry", 300], ["comment", " keepalive 500"], ["comment", " keepalive"]]);
});

test("an id-only block moves the cursor; an event without its own id is not fresh", () => {
  const { out, parser } = parse(["id: 7\n\n", "data: x\n\n", "id: 8\ndata: y\n\n"]);
  assert.deepEqual(out, [
    ["cursor", "7"],
    ["event", "message", "x", "7", false],
    ["event", "message", "y", "8", true],
  ]);
  assert.equal(parser.lastEventId, "8");
});

test("reset drops an unfinished event and keeps the id, or starts from a cursor", () => {
  const { out, parser } = parse(["id: 3\ndata: done\n\nid: 4\ndata: cut"], "start");
  parser.reset();
  parser.feed("\n\n");
  assert.deepEqual(out, [["event", "message", "done", "3", true]]);
  assert.equal(parser.lastEventId, "3");
  parser.reset("cursor-9");
  parser.feed("data: z\n\n");
  assert.deepEqual(out.at(-1), ["event", "message", "z", "cursor-9", false]);
});
