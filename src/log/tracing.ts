/**
 * Traces (`tracing`, docs/operations.md "Request ids and traces"): the sampling decision made when a request
 * arrives (`beginTrace`), and the export of one SERVER span per sampled request over OTLP/HTTP in the protocol's
 * JSON encoding (`openSpanExport`, made only when `tracing.otlp` is set).
 *
 * Portico makes its own ids (http/request-identity.ts: the traceparent the app receives names Portico's span): the
 * span is written when the answer is over, with the arrival time as its start and the ids already sent upstream.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { RequestContext } from '../http/context.js';
import { formatTraceparent, parseTraceparent, randomHex } from '../http/request-identity.js';

/** What `tracing` configures. */
export interface TracingConfig {
  readonly otlp?: string | undefined;
  readonly sample: number;
  readonly service_name: string;
}

/**
 * With `tracing`: decides whether this request is sampled and gives it Portico's span id. A valid `traceparent`
 * from the client keeps its trace id (the client's span becomes the parent, its `tracestate` passes on); its
 * sampled flag is followed only from a trusted proxy (`trustedPeer`), so that no client can make Portico record
 * every request; otherwise the request is sampled with probability `sample`. A request without a valid one starts
 * a trace, sampled with probability `sample`. The traceparent sent upstream says what was decided.
 */
export function beginTrace(ctx: RequestContext, sample: number, trustedPeer: boolean): void {
  const incoming = ctx.req.headers.traceparent === undefined ? undefined : parseTraceparent(ctx.req.headers.traceparent);
  if (incoming !== undefined) {
    ctx.traceParentId = incoming.parentId;
    ctx.traceStateKept = true;
    const sampled = trustedPeer ? incoming.sampled : Math.random() < sample;
    ctx.traceSampled = sampled;
    ctx.traceMemo = formatTraceparent(incoming.traceId, randomHex(8), sampled);
    return;
  }
  // Trace and span ids in one slice of the pool.
  const ids = randomHex(24);
  const sampled = Math.random() < sample;
  ctx.traceSampled = sampled;
  ctx.traceMemo = formatTraceparent(ids.slice(0, 32), ids.slice(32), sampled);
}

/** Records the spans of sampled requests and exports them in batches. */
export interface SpanExport {
  /** Records the request's span (call once its answer is over; only for `ctx.traceSampled`). */
  record(ctx: RequestContext): void;
  /** Exports what is pending (bounded by the exporter's timeout) and stops. */
  close(): Promise<void>;
}

/** How often a batch of spans is sent, at most. */
const EXPORT_DELAY_MS = 1000;
/** Spans waiting to be sent at most; more are dropped (a collector that is down must not grow memory). */
const QUEUE_MAX = 2048;
/** Longest an export (one POST) may take: also about what stopping waits for a collector that is down. */
const EXPORT_TIMEOUT_MS = 3000;
/** Longest `close()` waits for the last spans (a flush may need more than one export); then they are dropped. */
const CLOSE_WAIT_MS = 4000;

/** The OTLP traces URL: as given, or with `/v1/traces` when it has no path. */
export function tracesUrl(otlp: string): string {
  const url = new URL(otlp);
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/v1/traces';
  return url.toString();
}

/** One OTLP attribute (`AnyValue` in its JSON encoding: strings, integers, arrays of strings). */
type OtlpAttribute = { key: string; value: { stringValue: string } | { intValue: number } | { arrayValue: { values: Array<{ stringValue: string }> } } };

/** Milliseconds since the epoch (fractional) as OTLP's nanoseconds, a decimal string (past 2^53: no float). */
function unixNanos(ms: number): string {
  return `${Math.trunc(ms * 1000)}000`;
}

/**
 * Returns the span recorder: one SERVER span per sampled request, encoded as OTLP/JSON (the protocol's own JSON
 * mapping: hex ids, nanosecond strings, typed attribute values) and POSTed to the collector in batches at most a
 * second apart, at most QUEUE_MAX waiting (more are dropped while a collector is slow or down). An export has
 * EXPORT_TIMEOUT_MS and is not retried (its spans are dropped); failures are reported through `logger` at warn,
 * at most once a minute. Written here rather than with the OpenTelemetry SDK, which costs 5% of the proxy's
 * throughput at `sample: 0.01` (bench/RESULTS.md, "Issue 18: tracing"): what the SDK adds for one span — a Span
 * object, attribute checks, a processor and an exporter's transformer — is what this does in a few objects.
 */
export async function openSpanExport(config: TracingConfig & { otlp: string }, logger: Logger): Promise<SpanExport> {
  const { request } = await import('undici');
  const url = tracesUrl(config.otlp);
  const resource = { attributes: [{ key: 'service.name', value: { stringValue: config.service_name } }] };
  const scope = { name: 'portico' };
  const origin = performance.timeOrigin;
  let queue: object[] = [];
  let lastWarning = 0;
  let timer: NodeJS.Timeout | undefined;
  let inFlight: Promise<void> = Promise.resolve();
  let closed = false;

  const warn = (fields: Record<string, unknown>, message: string): void => {
    if (Date.now() - lastWarning < 60_000) return;
    lastWarning = Date.now();
    logger.warn({ otlp: config.otlp, ...fields }, message);
  };

  /** Sends what is queued now (one POST), after the send before it. */
  const flush = (): Promise<void> => {
    timer = undefined;
    if (queue.length === 0) return inFlight;
    const spans = queue;
    queue = [];
    const body = JSON.stringify({ resourceSpans: [{ resource, scopeSpans: [{ scope, spans }] }] });
    inFlight = inFlight.then(async () => {
      try {
        const res = await request(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
          headersTimeout: EXPORT_TIMEOUT_MS,
          bodyTimeout: EXPORT_TIMEOUT_MS,
          signal: AbortSignal.timeout(EXPORT_TIMEOUT_MS),
        });
        await res.body.dump();
        if (res.statusCode >= 300) warn({ status: res.statusCode, spans: spans.length }, 'tracing: spans could not be exported');
      } catch (err) {
        warn({ err, spans: spans.length }, 'tracing: spans could not be exported');
      }
    });
    return inFlight;
  };

  return {
    record(ctx) {
      if (closed) return;
      if (queue.length >= QUEUE_MAX) {
        warn({ queued: queue.length }, 'tracing: spans dropped, the collector does not keep up');
        return;
      }
      const traceparent = ctx.traceparent;
      const { req } = ctx;
      const attributes: OtlpAttribute[] = [
        { key: 'http.request.method', value: { stringValue: req.method ?? '' } },
        { key: 'url.scheme', value: { stringValue: ctx.scheme } },
        { key: 'url.path', value: { stringValue: ctx.path } },
        { key: 'server.address', value: { stringValue: ctx.host } },
        { key: 'client.address', value: { stringValue: ctx.clientAddress() } },
        { key: 'network.protocol.version', value: { stringValue: req.httpVersionMajor === 2 ? '2' : req.httpVersion } },
        { key: 'http.response.status_code', value: { intValue: ctx.status } },
        { key: 'http.response.body.size', value: { intValue: ctx.bytesSent } },
        { key: 'portico.request_id', value: { stringValue: ctx.requestId } },
      ];
      const agent = req.headers['user-agent'];
      if (agent !== undefined) attributes.push({ key: 'user_agent.original', value: { stringValue: agent } });
      if (ctx.upstreamLog !== undefined) {
        attributes.push({ key: 'portico.upstream.addresses', value: { arrayValue: { values: ctx.upstreamLog.map((attempt) => ({ stringValue: attempt.addr })) } } });
      }
      if (ctx.cacheStatus !== '') attributes.push({ key: 'portico.cache_status', value: { stringValue: ctx.cacheStatus } });
      queue.push({
        traceId: traceparent.slice(3, 35),
        spanId: traceparent.slice(36, 52),
        ...(ctx.traceParentId === '' ? {} : { parentSpanId: ctx.traceParentId }),
        name: req.method ?? 'HTTP',
        kind: 2, // SPAN_KIND_SERVER
        startTimeUnixNano: unixNanos(origin + ctx.start),
        endTimeUnixNano: unixNanos(origin + performance.now()),
        attributes,
        status: { code: ctx.status >= 500 ? 2 : 0 }, // STATUS_CODE_ERROR, else UNSET
      });
      if (timer === undefined) {
        timer = setTimeout(() => void flush(), EXPORT_DELAY_MS);
        timer.unref();
      }
    },
    async close() {
      closed = true;
      clearTimeout(timer);
      let wait: NodeJS.Timeout | undefined;
      const gaveUp = new Promise<'late'>((resolve) => {
        wait = setTimeout(() => resolve('late'), CLOSE_WAIT_MS);
      });
      const outcome = await Promise.race([flush().then(() => 'done' as const), gaveUp]);
      clearTimeout(wait);
      if (outcome === 'late') logger.warn({ otlp: config.otlp, waitedMs: CLOSE_WAIT_MS }, 'tracing: the collector did not take the last spans in time; they are dropped');
    },
  };
}
