// Tests of longpoll.js against a real Caddy with the plugin:
//   node --test client/
// Uses the Caddy binary in $LONGPOLL_CADDY, else builds ./cmd/caddy (needs Go).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { subscribe } from "./longpoll.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
let dir, caddy, poll, pub;
const secret = randomBytes(32).toString("hex"); // the /auth/* route's HMAC key

const freePort = () =>
  new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

// waitFor re-checks cond until it holds; the deadline only guards against a hang.
async function waitFor(what, cond) {
  const deadline = Date.now() + 60000;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const info = async (ch) => (await fetch(`${pub}/publish/${ch}`)).json();
const publish = async (ch, body, type = "text/plain") => {
  const res = await fetch(`${pub}/publish/${ch}`, { method: "POST", body, headers: { "Content-Type": type } });
  assert.equal(res.status, 200, await res.clone().text());
  return res.json();
};
const held = (ch, n) => waitFor(`${n} polls held on ${ch}`, async () => (await info(ch)).subscribers === n);

// grant signs an HS256 JWT with the /auth/* route's key.
function grant(claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const signed = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${signed}.${createHmac("sha256", secret).update(signed).digest("base64url")}`;
}

// collect subscribes and records what the client reports, and the options
// of each fetch. opts.cookie is sent as the Cookie header, as a browser
// sends its cookie jar's.
function collect(path, { cookie, ...opts } = {}) {
  const got = { messages: [], gaps: [], errors: [], statuses: [], fetches: 0, inits: [] };
  got.sub = subscribe(poll + path, {
    fetch: (url, init) => {
      got.fetches++;
      got.inits.push(init);
      return fetch(url, cookie ? { ...init, headers: { ...init.headers, Cookie: cookie } } : init);
    },
    onMessage: (m) => got.messages.push(m),
    onGap: (g) => got.gaps.push(g),
    onError: (e) => got.errors.push(e),
    onStatus: (s) => got.statuses.push(s),
    ...opts,
  });
  return got;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "longpoll-js-"));
  let bin = process.env.LONGPOLL_CADDY;
  if (!bin) {
    bin = join(dir, "caddy");
    execFileSync("go", ["build", "-o", bin, "./cmd/caddy"], { cwd: root, stdio: "inherit" });
  }
  const [pp, bp] = [await freePort(), await freePort()];
  poll = `http://127.0.0.1:${pp}`;
  pub = `http://127.0.0.1:${bp}`;
  writeFileSync(
    join(dir, "Caddyfile"),
    `{
	admin off
	persist_config off
	longpoll {
		store memory {
			buffer 3
		}
		max_held 4
	}
}
${poll} {
	longpoll /poll/* {
		timeout 1s
	}
	longpoll /raw/* {
		format raw
	}
	longpoll /auth/* {
		auth jwt {
			key ${secret}
			cookie lp_grant
		}
	}
}
${pub} {
	longpoll_publish /publish/*
}
`,
  );
  caddy = spawn(bin, ["run", "--config", join(dir, "Caddyfile"), "--adapter", "caddyfile"], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  caddy.stderr.on("data", (d) => (log += d));
  caddy.on("exit", (code) => {
    if (code) console.error(`caddy exited ${code}:\n${log}`);
  });
  await waitFor("caddy to start", () => info("ready").then(() => true, () => false));
});

after(() => {
  caddy?.kill();
  rmSync(dir, { recursive: true, force: true });
});

test("delivers every message once, in order, re-polling with the last cursor", async () => {
  const { cursor } = await info("order");
  const got = collect("/poll/order", { cursor });
  for (let i = 0; i < 20; i++) await publish("order", JSON.stringify({ i }), "application/json");
  await waitFor("20 messages", () => got.messages.length >= 20);
  assert.deepEqual(
    got.messages.map((m) => m.data.i),
    [...Array(20).keys()],
  );
  assert.equal(new Set(got.messages.map((m) => m.id)).size, 20);
  assert.equal(got.sub.cursor, got.messages[19].id);
  assert.deepEqual(got.errors, []);
  got.sub.close();
  await held("order", 0);
});

test("a 304 is followed by a new poll at once, with the same cursor", async () => {
  const { cursor } = await info("quiet");
  const got = collect("/poll/quiet", { cursor });
  await waitFor("a poll after a 304", () => got.fetches >= 2); // timeout 1s: the first poll got 304
  assert.equal(got.sub.cursor, cursor);
  await held("quiet", 1);
  await publish("quiet", "after the 304");
  await waitFor("the message", () => got.messages.length === 1);
  assert.equal(got.messages[0].data, "after the 304");
  assert.ok(got.statuses.includes("live"));
  assert.deepEqual(got.errors, []);
  got.sub.close();
});

test("a gap is reported, then what was retained is delivered", async () => {
  const { cursor } = await info("gappy");
  for (let i = 0; i < 5; i++) await publish("gappy", `m${i}`);
  const got = collect("/poll/gappy", { cursor });
  await waitFor("3 retained messages", () => got.messages.length === 3);
  assert.equal(got.gaps.length, 1);
  assert.deepEqual(
    got.messages.map((m) => m.data),
    ["m2", "m3", "m4"],
  );
  await publish("gappy", "m5");
  await waitFor("the next message", () => got.messages.length === 4);
  assert.equal(got.gaps.length, 1, "one gap, not one per poll");
  got.sub.close();
});

test("a raw route hands over each body with its content type", async () => {
  const { cursor } = await info("rawch");
  await publish("rawch", "plain text", "text/plain; charset=utf-8");
  await publish("rawch", new Uint8Array([0, 1, 255]), "application/octet-stream");
  const got = collect("/raw/rawch", { cursor, format: "raw" });
  await waitFor("2 raw messages", () => got.messages.length === 2);
  assert.equal(got.messages[0].type, "text/plain; charset=utf-8");
  assert.equal(got.messages[0].text, "plain text");
  assert.equal(got.messages[1].type, "application/octet-stream");
  assert.deepEqual([...got.messages[1].body], [0, 1, 255]);
  assert.notEqual(got.messages[0].id, got.messages[1].id);
  got.sub.close();
});

test("410 (channel deleted) stops the subscription and says why", async () => {
  const got = collect("/poll/doomed");
  await held("doomed", 1);
  const res = await fetch(`${pub}/publish/doomed`, { method: "DELETE" });
  assert.equal(res.status, 200);
  await waitFor("closed", () => got.statuses.at(-1) === "closed");
  assert.equal(got.errors.length, 1);
  assert.equal(got.errors[0].status, 410);
  assert.equal(got.errors[0].retrying, false);
  const fetches = got.fetches;
  await publish("doomed", "too late");
  assert.equal(got.fetches, fetches, "no poll after 410");
});

test("503 (max_held) backs off, honouring Retry-After, and recovers", async () => {
  const { cursor } = await info("full");
  const holders = [];
  for (let i = 0; i < 4; i++) holders.push(collect("/poll/full", { cursor }));
  await held("full", 4);
  const late = collect("/poll/full", { cursor, minDelay: 10 });
  await waitFor("a 503", () => late.errors.length > 0);
  assert.equal(late.errors[0].status, 503);
  assert.equal(late.errors[0].retrying, true);
  assert.ok(late.statuses.includes("reconnecting"));
  holders[0].sub.close();
  await publish("full", "room again");
  await waitFor("the late subscriber's message", () => late.messages.length === 1);
  assert.equal(late.messages[0].data, "room again");
  for (const h of [...holders, late]) h.sub.close();
  await held("full", 0);
});

test("close() aborts the held poll", async () => {
  const got = collect("/poll/leaving");
  await held("leaving", 1);
  got.sub.close();
  await held("leaving", 0);
  await waitFor("closed", () => got.sub.status === "closed");
  assert.deepEqual(got.errors, []);
});

test("network errors are retried with backoff until close()", async () => {
  const port = await freePort(); // nothing listens there
  const errors = [];
  const statuses = [];
  const sub = subscribe(`http://127.0.0.1:${port}/poll/x`, {
    minDelay: 5,
    onError: (e) => errors.push(e),
    onStatus: (s) => statuses.push(s),
  });
  await waitFor("3 failed polls", () => errors.length >= 3);
  assert.ok(errors.every((e) => e.retrying && e.status === 0));
  assert.equal(sub.status, "reconnecting");
  sub.close();
  await waitFor("closed", () => sub.status === "closed");
});

test("credentials go to fetch: same-origin by default, include when asked", async (t) => {
  const plain = collect("/poll/creds");
  const cross = collect("/poll/creds", { credentials: "include" });
  t.after(() => [plain, cross].forEach((c) => c.sub.close())); // also when an assertion fails
  await held("creds", 2);
  assert.equal(plain.inits[0].credentials, "same-origin");
  assert.equal(cross.inits[0].credentials, "include");
  plain.sub.close();
  cross.sub.close();
  await held("creds", 0);
});

test("a grant in the cookie that lists the channel lets the poll in", async (t) => {
  const { cursor } = await info("granted");
  const cookie = `lp_grant=${grant({ sub: "ann", channels: ["granted"], exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  const got = collect("/auth/granted", { cursor, cookie });
  t.after(() => got.sub.close());
  await held("granted", 1);
  await publish("granted", "for ann");
  await waitFor("the message", () => got.messages.length === 1);
  assert.equal(got.messages[0].data, "for ann");
  assert.deepEqual(got.errors, []);
  got.sub.close();
  await held("granted", 0);
});

for (const { status, name, cookie, why } of [
  { status: 401, name: "no grant", cookie: undefined, why: "no grant" },
  {
    status: 403,
    name: "a grant without the channel",
    cookie: `lp_grant=${grant({ sub: "eve", channels: ["other-*"] })}`,
    why: 'grant does not allow to poll channel "guarded"',
  },
]) {
  test(`${status} (${name}) is reported once, with its status, and not retried`, async (t) => {
    const got = collect("/auth/guarded", { cookie, minDelay: 1 });
    t.after(() => got.sub.close()); // were it retried, it must not outlive the test
    await waitFor("closed", () => got.statuses.at(-1) === "closed");
    assert.equal(got.errors.length, 1);
    assert.equal(got.errors[0].status, status);
    assert.equal(got.errors[0].retrying, false);
    assert.ok(got.errors[0].message.includes(why), got.errors[0].message);
    assert.equal(got.fetches, 1, "no poll after the refusal");
    assert.equal(got.sub.status, "closed");
  });
}
