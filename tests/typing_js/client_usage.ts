// Compiled by tsc against client.d.ts: the public surface issue #14 promises.
import {
  CLOSED,
  EventStreamParser,
  SSEPushClient,
  type SSEPushEvent,
} from "../../flask_sse_push/static/client.js";

function handlerOfFields(type: string, data: string, id: string, fresh: boolean): void {
  void [type, data, id, fresh];
}

const client = new SSEPushClient("/events", {
  channels: ["orders", "news"],
  lastEventId: "cursor",
  shared: true,
});
const handler = (event: SSEPushEvent): void => {
  const parts: string[] = [event.type, event.data, event.lastEventId];
  void parts;
};
client.on("created", handler).on("message", handler).on("reset", handler);
client.on("open", handler).on("error", handler);
client.off("created", handler);
const closed: boolean = client.readyState === CLOSED;
const credentials: boolean = client.withCredentials;
void credentials;
const comments: string[] = [];
const parser = new EventStreamParser(handlerOfFields, () => {}, () => {}, (text) => comments.push(text));
parser.reset("cursor");
void closed;
client.close();
