// Types of the Flask-SSE-Push browser client (client.js, served at <prefix>/client.js).

/** `EventSource.readyState` values. */
export declare const CONNECTING: 0;
export declare const OPEN: 1;
export declare const CLOSED: 2;

export interface SSEPushEvent {
  /** "message" for unnamed events, else the `event:` field; "open"/"error" for connection state. */
  readonly type: string;
  /** The event's data, its `data:` lines joined with "\n". */
  readonly data: string;
  /** The id in effect after this event (the SSE "last event ID string"). */
  readonly lastEventId: string;
}

export type SSEPushHandler = (event: SSEPushEvent) => void;

export interface SSEPushOptions {
  /** Channels to stream; default `["default"]`. */
  channels?: string[];
  /** First-connect cursor, e.g. `sse.cursor(channel)` rendered into the page. */
  lastEventId?: string;
  /**
   * Share one stream across the tabs of this origin in the same session (those given the
   * same key by `<prefix>/session-key`); default true.
   */
  shared?: boolean;
  /** Send cookies on a cross-origin stream too (fetch `credentials: "include"`). */
  withCredentials?: boolean;
}

export declare class SSEPushClient {
  constructor(url: string, options?: SSEPushOptions);
  /** The stream URL with its `channel` parameters, cursor aside. */
  readonly url: string;
  readonly channels: readonly string[];
  /** The id of the last event delivered, or the first-connect cursor. */
  readonly lastEventId: string;
  /**
   * Whether this client shares a stream (false with `shared: false`, without Web Locks or
   * BroadcastChannel, or when the server gives no session key).
   */
  readonly shared: boolean;
  /** Whether cookies go to another origin too, as `EventSource.withCredentials`. */
  readonly withCredentials: boolean;
  /** 0 connecting, 1 open, 2 closed, as `EventSource.readyState`. */
  readonly readyState: number;
  /**
   * "leader" holds the shared stream, "follower" receives it (or is still asking for its
   * session key), "own" is the fallback.
   */
  readonly role: "leader" | "follower" | "own" | "closed";
  /**
   * Call `handler` for events of `type`: "message" (unnamed), a named type, "reset",
   * "open" or "error"; "*" gets every event the stream carries ("open" and "error" aside).
   */
  on(type: string, handler: SSEPushHandler): this;
  off(type: string, handler: SSEPushHandler): this;
  /** `EventSource`-style aliases of `on` and `off`. */
  addEventListener(type: string, handler: SSEPushHandler): void;
  removeEventListener(type: string, handler: SSEPushHandler): void;
  /** Stop listening here; a shared stream lives on for the other clients. */
  close(): void;
}

/** The incremental `text/event-stream` parser the client uses (WHATWG HTML §9.2.6). */
export declare class EventStreamParser {
  constructor(
    onEvent: (type: string, data: string, id: string, fresh: boolean) => void,
    onCursor: (id: string) => void,
    onRetry: (ms: number) => void,
    /** Called with the text after the colon of each comment line. */
    onComment?: (text: string) => void,
  );
  readonly lastEventId: string;
  feed(chunk: string): void;
  /** Drop an unfinished event; the last event id stays, or becomes `lastEventId`. */
  reset(lastEventId?: string): void;
}
