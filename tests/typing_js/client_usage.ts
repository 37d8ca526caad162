// Compiled by tsc against client.d.ts: the public surface issue #14 promises.
import { CLOSED, SSEPushClient, type SSEPushEvent } from "../../flask_sse_push/static/client.js";

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
void closed;
client.close();
