// longpoll.js: the browser (and Node 20) client of caddy-longpoll.
// An ES module with no dependencies.
//
//   import { subscribe } from "/client/longpoll.js";
//   const sub = subscribe("/chat/poll?room=lobby", {
//     cursor: window.initialCursor,          // from the app's page; omit: from now on
//     onMessage: (m) => show(m.data),        // each message once, in order
//     onGap: ({ cursor }) => resync(),       // messages may have been missed
//     onError: (err) => console.warn(err),   // err.status: HTTP status, if any
//     onStatus: (s) => indicator(s),         // "connecting" | "live" | "reconnecting" | "closed"
//     credentials: "include",                // cookies (a grant) for a poll route on another
//   });                                      //   origin; default "same-origin"
//   sub.close();                             // aborts the held poll
//
// The server holds each poll until a message exists or its timeout passes
// (304); the client polls again at once with the cursor of the last answer.
// Network errors, 5xx, 429 and 503 are retried with exponential backoff and
// jitter, honouring Retry-After. 410 (channel deleted), 401 (no grant, or a
// bad or expired one), 403 (the grant does not list the channel) and other
// 4xx stop the subscription: retrying would not help. Each is reported once
// through onError, with its status and retrying false, before "closed".

const defaults = {
  cursor: "",
  cursorParam: "since", // the route's cursor_param
  format: "json", // the route's format: "json" or "raw"
  minDelay: 500, // first retry delay after an error, ms
  maxDelay: 30000, // longest retry delay, ms
  liveAfter: 1000, // a poll pending this long is held by the server: "live", ms
  credentials: "same-origin", // fetch's credentials: send cookies (such as a grant) to the poll route;
  // "include" when it is on another origin (it must then allow credentials in CORS)
  fetch: undefined, // the fetch to use; default globalThis.fetch
  onMessage: () => {},
  onGap: () => {},
  onError: () => {},
  onStatus: () => {},
};

/** An error of the subscription; status is the HTTP status, if there was an answer. */
export class LongpollError extends Error {
  constructor(message, status, retrying) {
    super(message);
    this.name = "LongpollError";
    this.status = status;
    this.retrying = retrying;
  }
}

/**
 * Follows a long-poll route.
 * @param {string|URL} url the poll route, with its query (e.g. "/chat/poll?room=lobby")
 * @param {object} options see the defaults above
 * @returns {{close(): void, readonly cursor: string, readonly status: string}}
 */
export function subscribe(url, options = {}) {
  const o = { ...defaults, ...options };
  const doFetch = o.fetch || globalThis.fetch.bind(globalThis);
  let cursor = o.cursor || "";
  let status = "";
  let closed = false;
  let controller = null;
  let sleepTimer = null;
  let wakeSleep = null;
  let failures = 0;
  const seen = new Set(); // recent message ids: never deliver one twice
  const seenOrder = [];

  const setStatus = (s) => {
    if (s !== status) {
      status = s;
      safely(o.onStatus, s);
    }
  };
  const safely = (fn, ...args) => {
    try {
      fn(...args);
    } catch (err) {
      // A throwing callback must not stop the subscription.
      setTimeout(() => {
        throw err;
      });
    }
  };
  const remember = (id) => {
    seen.add(id);
    seenOrder.push(id);
    if (seenOrder.length > 1000) seen.delete(seenOrder.shift());
  };
  const sleep = (ms) =>
    new Promise((resolve) => {
      wakeSleep = resolve;
      sleepTimer = setTimeout(resolve, ms);
    });
  const pollURL = () => {
    const u = new URL(url, globalThis.location ? globalThis.location.href : undefined);
    if (cursor) u.searchParams.set(o.cursorParam, cursor);
    else u.searchParams.delete(o.cursorParam);
    return u;
  };
  const etagCursor = (res) => {
    const etag = res.headers.get("ETag");
    return etag ? etag.replace(/^W\//, "").replaceAll('"', "") : "";
  };
  const retryDelay = (res) => {
    const exp = Math.min(o.maxDelay, o.minDelay * 2 ** Math.min(failures, 16));
    let ms = exp / 2 + Math.random() * (exp / 2); // jitter: between half and all of it
    const ra = res && res.headers.get("Retry-After");
    if (ra) {
      const secs = Number(ra);
      const at = Number.isFinite(secs) ? secs * 1000 : Date.parse(ra) - Date.now();
      if (Number.isFinite(at)) ms = Math.max(ms, Math.min(at, o.maxDelay)) + Math.random() * 250;
    }
    return ms;
  };

  async function deliver(res) {
    if (o.format === "raw") {
      const id = etagCursor(res);
      const gap = res.headers.get("Longpoll-Gap") === "true";
      if (gap) safely(o.onGap, { cursor: id });
      if (res.status === 200 && !seen.has(id)) {
        const body = new Uint8Array(await res.arrayBuffer());
        remember(id);
        const type = res.headers.get("Content-Type") || "";
        safely(o.onMessage, { id, type, body, get text() { return new TextDecoder().decode(body); } });
      }
      if (id) cursor = id;
      return;
    }
    const ans = await res.json();
    if (ans.gap || res.headers.get("Longpoll-Gap") === "true") safely(o.onGap, { cursor: ans.cursor });
    for (const m of ans.messages || []) {
      if (closed) return;
      if (seen.has(m.id)) continue;
      remember(m.id);
      safely(o.onMessage, m);
    }
    if (ans.cursor) cursor = ans.cursor;
  }

  async function loop() {
    setStatus("connecting");
    while (!closed) {
      controller = new AbortController();
      const liveTimer = setTimeout(() => setStatus("live"), o.liveAfter);
      let res;
      try {
        res = await doFetch(pollURL(), {
          signal: controller.signal,
          cache: "no-store",
          credentials: o.credentials,
          headers: { Accept: o.format === "raw" ? "*/*" : "application/json" },
        });
        if (res.status === 200 || res.status === 204) {
          await deliver(res);
        } else if (res.status === 304) {
          const c = etagCursor(res);
          if (c) cursor = c;
        }
      } catch (err) {
        clearTimeout(liveTimer);
        if (closed) break;
        failures++;
        setStatus("reconnecting");
        safely(o.onError, new LongpollError(`poll failed: ${err && err.message}`, 0, true));
        await sleep(retryDelay(null));
        continue;
      }
      clearTimeout(liveTimer);
      if (closed) break;
      if (res.status === 200 || res.status === 204 || res.status === 304) {
        failures = 0;
        setStatus("live");
        continue; // poll again at once
      }
      const text = await res.text().catch(() => "");
      let why = text;
      try {
        why = JSON.parse(text).error || text;
      } catch {}
      const retry = res.status >= 500 || res.status === 429 || res.status === 408;
      safely(o.onError, new LongpollError(`poll answered ${res.status}: ${why}`.trim(), res.status, retry));
      if (!retry) {
        // 410: the channel was deleted; 401/403: no grant for it; other 4xx: a bad
        // request. Retrying would not help: the app must act (e.g. grant the channel).
        closed = true;
        break;
      }
      failures++;
      setStatus("reconnecting");
      await sleep(retryDelay(res));
    }
    setStatus("closed");
  }

  loop();

  return {
    close() {
      if (closed) return;
      closed = true;
      if (controller) controller.abort();
      clearTimeout(sleepTimer);
      if (wakeSleep) wakeSleep();
    },
    get cursor() {
      return cursor;
    },
    get status() {
      return status;
    },
  };
}
