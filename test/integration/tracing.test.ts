/**
 * Claims of docs/operations.md ("Request ids and traces") about `tracing`: one SERVER span per sampled request,
 * exported over OTLP/HTTP (JSON) to a collector — here a small stub, a real HTTP server on loopback that reads the
 * exports — with the ids the app was sent in traceparent (Portico's span is the app's parent); a client's sampled
 * flag is followed only from a trusted proxy; unsampled requests export nothing; a collector that is down costs
 * no request and bounds the stop.
 */
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { parseConfig } from '../../src/server/config.js';
import { makeTree, startPortico, type RunningPortico } from '../helpers/portico.js';
import { closeHttpServer, startUpstream, type TestUpstream } from '../helpers/upstream.js';

interface OtlpValue {
  stringValue?: string;
  intValue?: number | string;
  arrayValue?: { values: OtlpValue[] };
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string | number;
  endTimeUnixNano: string | number;
  attributes: Array<{ key: string; value: OtlpValue }>;
  status?: { code?: number };
}
interface ReceivedSpan extends OtlpSpan {
  service: string | undefined;
}

/** A collector stub: accepts OTLP/HTTP JSON trace exports and keeps their spans. */
class CollectorStub extends EventEmitter {
  readonly spans: ReceivedSpan[] = [];
  readonly contentTypes: string[] = [];
  readonly server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      this.contentTypes.push(String(req.headers['content-type']));
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end();
        return;
      }
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
        resourceSpans: Array<{ resource: { attributes: Array<{ key: string; value: OtlpValue }> }; scopeSpans: Array<{ spans: OtlpSpan[] }> }>;
      };
      for (const rs of body.resourceSpans) {
        const service = rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue;
        for (const ss of rs.scopeSpans) for (const span of ss.spans) this.spans.push({ ...span, service });
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      this.emit('spans');
    });
  });

  async start(): Promise<string> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1/traces`;
  }

  /** Resolves once a span passes `match` (bounded: rejects after `timeoutMs`). */
  async waitFor(match: (span: ReceivedSpan) => boolean, timeoutMs = 10_000): Promise<ReceivedSpan> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.spans.find(match);
      if (found !== undefined) return found;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching span within ${timeoutMs} ms; received: ${JSON.stringify(this.spans.map((s) => s.spanId))}`);
      await Promise.race([once(this, 'spans'), new Promise((resolve) => setTimeout(resolve, Math.min(left, 500)))]);
    }
  }
}

function attribute(span: OtlpSpan, key: string): string | number | undefined {
  const value = span.attributes.find((a) => a.key === key)?.value;
  if (value === undefined) return undefined;
  return value.stringValue ?? (value.intValue === undefined ? undefined : Number(value.intValue));
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$/;

describe('tracing: spans exported to an OTLP collector', () => {
  let collector: CollectorStub;
  let app: TestUpstream;
  let sampled: RunningPortico;
  let unsampled: RunningPortico;

  before(async () => {
    collector = new CollectorStub();
    const otlp = await collector.start();
    app = await startUpstream('app');
    sampled = await startPortico(`tracing: { otlp: ${JSON.stringify(otlp)}, sample: 1, service_name: edge-test }
sites:
  - routes:
      - path: /app/
        proxy: { url: ${JSON.stringify(app.url)} }
      - path: /fail
        respond: { status: 503, body: "down" }
`);
    // sample 0: only a trusted proxy's sampled flag makes a span; 127.0.0.1 is trusted here.
    unsampled = await startPortico(`tracing: { otlp: ${JSON.stringify(otlp)}, sample: 0, service_name: edge-zero }
trusted_proxies: ["127.0.0.1"]
sites:
  - routes:
      - path: /app/
        proxy: { url: ${JSON.stringify(app.url)} }
`);
  });

  after(async () => {
    await sampled.stop();
    await unsampled.stop();
    await app.stop();
    await closeHttpServer(collector.server);
  });

  test('a sampled request is exported as one SERVER span with the ids the app was sent (flags 01)', async () => {
    const res = await fetch(`${sampled.url}/app/a?x=1`, { headers: { 'x-request-id': 'span-1', 'user-agent': 'trace-test' } });
    assert.equal(await res.text(), 'app');
    const sent = String(app.requests.at(-1)!.headers.traceparent);
    const m = TRACEPARENT.exec(sent);
    assert.ok(m !== null, sent);
    assert.equal(m[3], '01');
    const span = await collector.waitFor((s) => s.spanId === m[2]);
    assert.equal(span.traceId, m[1]);
    assert.ok(span.parentSpanId === undefined || span.parentSpanId === '', `a started trace has no parent: ${span.parentSpanId}`);
    assert.equal(span.service, 'edge-test');
    assert.equal(span.name, 'GET');
    assert.equal(span.kind, 2, 'SPAN_KIND_SERVER');
    assert.equal(attribute(span, 'http.request.method'), 'GET');
    assert.equal(attribute(span, 'url.path'), '/app/a');
    assert.equal(attribute(span, 'http.response.status_code'), 200);
    assert.equal(attribute(span, 'portico.request_id'), 'span-1');
    assert.equal(attribute(span, 'user_agent.original'), 'trace-test');
    assert.ok(BigInt(span.endTimeUnixNano) >= BigInt(span.startTimeUnixNano));
    assert.ok(collector.contentTypes.every((type) => type.startsWith('application/json')), collector.contentTypes.join());
  });

  test("a client's valid traceparent keeps its trace id; Portico's span is its child and the app's parent", async () => {
    const client = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00';
    const res = await fetch(`${sampled.url}/app/child`, { headers: { traceparent: client } });
    await res.text();
    const m = TRACEPARENT.exec(String(app.requests.at(-1)!.headers.traceparent))!;
    assert.equal(m[1], '4bf92f3577b34da6a3ce929d0e0e4736');
    assert.notEqual(m[2], '00f067aa0ba902b7');
    // Not a trusted proxy: its "not sampled" does not bind Portico, whose sample is 1.
    assert.equal(m[3], '01');
    const span = await collector.waitFor((s) => s.spanId === m[2]);
    assert.equal(span.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
    assert.equal(span.parentSpanId, '00f067aa0ba902b7');
  });

  test('a 5xx answer is exported with an error status', async () => {
    const res = await fetch(`${sampled.url}/fail`);
    assert.equal(res.status, 503);
    const id = res.headers.get('x-request-id')!;
    const span = await collector.waitFor((s) => attribute(s, 'portico.request_id') === id);
    assert.equal(span.status?.code, 2, 'STATUS_CODE_ERROR');
    assert.equal(attribute(span, 'http.response.status_code'), 503);
  });

  test("with sample 0 nothing is exported, except a trusted proxy's sampled request", async () => {
    const before = collector.spans.length;
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${unsampled.url}/app/quiet`);
      await res.text();
      assert.match(String(app.requests.at(-1)!.headers.traceparent), /-00$/);
    }
    const trusted = '00-11111111111111111111111111111111-2222222222222222-01';
    const res = await fetch(`${unsampled.url}/app/loud`, { headers: { traceparent: trusted } });
    await res.text();
    const m = TRACEPARENT.exec(String(app.requests.at(-1)!.headers.traceparent))!;
    assert.equal(m[3], '01');
    const span = await collector.waitFor((s) => s.spanId === m[2]);
    assert.equal(span.service, 'edge-zero');
    assert.equal(span.parentSpanId, '2222222222222222');
    // The five unsampled requests were answered before the sampled one: had they been exported, they would be here.
    const zero = collector.spans.slice(before).filter((s) => s.service === 'edge-zero');
    assert.deepEqual(zero.map((s) => s.spanId), [m[2]]);
  });
});

describe('tracing without an exporter, and its config', () => {
  test('tracing: { sample: 1 } without otlp samples (flag 01 to the app) and exports nothing', async () => {
    const app = await startUpstream('app');
    const portico = await startPortico(`tracing: { sample: 1 }
sites:
  - routes: [{ path: /, proxy: { url: ${JSON.stringify(app.url)} } }]
`);
    try {
      const res = await fetch(`${portico.url}/x`);
      assert.equal(await res.text(), 'app');
      assert.match(String(app.requests.at(-1)!.headers.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    } finally {
      await portico.stop();
      await app.stop();
    }
  });

  test('a collector that is down costs no request, and stopping does not wait for it', async (t) => {
    // A port that was just free: connections to it are refused.
    const closed = http.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    await closeHttpServer(closed);
    const portico = await startPortico(`tracing: { otlp: "http://127.0.0.1:${port}/v1/traces", sample: 1 }
sites:
  - routes: [{ path: /, respond: { body: "ok" } }]
`);
    let stopped = false;
    try {
      for (let i = 0; i < 20; i++) {
        const res = await fetch(`${portico.url}/`);
        assert.equal(await res.text(), 'ok');
      }
      const started = Date.now();
      await portico.stop();
      stopped = true;
      t.diagnostic(`stop took ${Date.now() - started} ms with 20 spans for a collector that refuses connections`);
      assert.ok(Date.now() - started < 6000);
    } finally {
      if (!stopped) await portico.stop();
    }
  });

  test('a bad tracing key is a config error at its file:line:col', () => {
    const dir = makeTree();
    try {
      for (const [text, what] of [
        ['tracing:\n  sample: 2\n', /p\.yaml:2:\d+.*tracing\.sample/s],
        ['tracing:\n  otlp: "ftp://x"\n', /p\.yaml:2:\d+.*tracing\.otlp/s],
        ['tracing:\n  samples: 0.1\n', /p\.yaml:2:\d+.*samples/s],
      ] as const) {
        assert.throws(
          () => parseConfig(`${text}sites:\n  - routes: [{ path: /, respond: { body: ok } }]\n`, path.join(dir, 'p.yaml'), dir),
          (err: unknown) => err instanceof ConfigError && what.test(err.message),
          text,
        );
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
