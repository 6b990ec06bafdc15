// Drives @fanoutio/grip, a GRIP library we did not write, to produce what
// grip/fanout_test.go checks our package against: publish requests it builds,
// hold headers it writes, and its verdict on Grip-Sigs we made. It needs no
// network: publishes go to a fetch that records them.
//
// Usage: node fanoutio-grip.mjs <node_modules dir> < input.json > golden.json
// (grip/fanout_test.go runs it with -grip.fanout=<node_modules dir>).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const dir = process.argv[2];
const grip = await import(pathToFileURL(join(dir, '@fanoutio/grip/build/index-node.js')));
const version = JSON.parse(readFileSync(join(dir, '@fanoutio/grip/package.json'), 'utf8')).version;
const input = JSON.parse(readFileSync(0, 'utf8'));

const publishes = [];
const recordingFetch = async (url, init) => {
  publishes.push({ method: init.method, url: String(url), headers: init.headers, body: init.body });
  return new Response('Published\n', { status: 200, headers: { 'Content-Type': 'text/plain' } });
};
const publisher = new grip.Publisher(
  { control_uri: 'http://localhost:2019/longpoll', control_iss: 'app', key: input.publishKey },
  { fetch: recordingFetch },
);

const { HttpResponseFormat, HttpStreamFormat } = grip;
await publisher.publishHttpResponse('chat-42', new HttpResponseFormat({
  code: 404, reason: 'Gone Fishing', headers: { 'Content-Type': 'application/json', 'X-Id': '1042' },
  body: '{"messages":[1042]}',
}), '1042', '1041');
await publisher.publishHttpResponse('chat-42', 'just a body');
await publisher.publishHttpResponse('bin', new HttpResponseFormat({ body: new Uint8Array([0, 1, 2, 255]) }), 'b1');
await publisher.publishFormats('mixed', [new HttpResponseFormat({ body: 'r' }), new HttpStreamFormat('s')], '2', '1');
await publisher.publishHttpStream('stream-only', 'chunk');

const instructs = [];
let gi = new grip.GripInstruct([new grip.Channel('chat-42', '1041'), 'chat-43']);
gi.setHoldLongPoll(30);
instructs.push({ name: 'long-poll, prev-id, timeout', headers: gi.toHeaders({ 'Content-Type': 'application/json' }) });
gi = new grip.GripInstruct('c');
gi.setHoldLongPoll();
gi.setStatus(304);
gi.meta = { user: 'a "b"' };
instructs.push({ name: 'long-poll, status, meta', headers: gi.toHeaders() });
gi = new grip.GripInstruct('s');
gi.setHoldStream();
gi.setKeepAlive('ping\n', 20);
instructs.push({ name: 'stream keep-alive', headers: gi.toHeaders() });

const sigs = [];
for (const s of input.sigs) {
  sigs.push({ ...s, valid: await grip.validateSig(s.token, s.verifyKey) });
}

process.stdout.write(JSON.stringify({
  package: `@fanoutio/grip@${version}`,
  recordedAt: Math.floor(Date.now() / 1000),
  publishes, instructs, sigs,
}, null, 2) + '\n');
