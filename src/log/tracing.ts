/**
 * Traces (`tracing`, docs/operations.md "Request ids and traces"): the sampling decision made when a request
 * arrives (`beginTrace`, no OpenTelemetry involved), and the export of one SERVER span per sampled request over
 * OTLP/HTTP (JSON) with the OpenTelemetry SDK (`openSpanExport`), loaded only when `tracing.otlp` is set: a config
 * without it never loads those packages.
 *
 * Portico makes its own ids (http/request-identity.ts: the traceparent the app receives names Portico's span), so
 * the SDK is handed them through an id generator: the span is made when the answer is over, with the arrival time
 * as its start, and its ids are the ones already sent upstream.
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
/**
 * Longest an export may take, its retries included (the exporter retries a refused or failed POST with backoff
 * until this deadline): also about what stopping waits for a collector that is down.
 */
const EXPORT_TIMEOUT_MS = 3000;
/** Longest `close()` waits for the last spans (a flush may need more than one export); then they are dropped. */
const CLOSE_WAIT_MS = 4000;

/** The OTLP traces URL: as given, or with `/v1/traces` when it has no path. */
export function tracesUrl(otlp: string): string {
  const url = new URL(otlp);
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/v1/traces';
  return url.toString();
}

/**
 * Loads the OpenTelemetry SDK and its OTLP/HTTP exporter (JSON) and returns the span recorder. Export failures
 * (a collector down, a refusal) are reported through `logger` at warn, at most once a minute.
 */
export async function openSpanExport(config: TracingConfig & { otlp: string }, logger: Logger): Promise<SpanExport> {
  const [api, sdk, exporterModule, resources] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    // A dependency of @opentelemetry/sdk-trace, installed with it: the only way to name the service.
    import('@opentelemetry/resources'),
  ]);
  /** The ids of the span being made: Portico's own, already sent upstream. */
  let nextTraceId = '';
  let nextSpanId = '';
  const ids = {
    generateTraceId: () => nextTraceId,
    generateSpanId: () => nextSpanId,
  };
  const otlp = new exporterModule.OTLPTraceExporter({ url: tracesUrl(config.otlp), timeoutMillis: EXPORT_TIMEOUT_MS });
  let lastWarning = 0;
  const exporter: import('@opentelemetry/sdk-trace').SpanExporter = {
    export(spans, done) {
      otlp.export(spans, (result) => {
        if (result.code !== 0 && Date.now() - lastWarning > 60_000) {
          lastWarning = Date.now();
          logger.warn({ err: result.error, otlp: config.otlp, spans: spans.length }, 'tracing: spans could not be exported');
        }
        done(result);
      });
    },
    shutdown: () => otlp.shutdown(),
    forceFlush: () => otlp.forceFlush(),
  };
  const provider = new sdk.TracerProvider({
    resource: resources.resourceFromAttributes({ 'service.name': config.service_name }),
    sampler: new sdk.AlwaysOnSampler(),
    idGenerator: ids,
    spanProcessors: [
      new sdk.BatchSpanProcessor({
        exporter,
        scheduledDelayMillis: EXPORT_DELAY_MS,
        maxQueueSize: QUEUE_MAX,
        exportTimeoutMillis: EXPORT_TIMEOUT_MS,
      }),
    ],
  });
  const tracer = provider.getTracer('portico');
  const origin = performance.timeOrigin;
  return {
    record(ctx) {
      const traceparent = ctx.traceparent;
      nextTraceId = traceparent.slice(3, 35);
      nextSpanId = traceparent.slice(36, 52);
      const parent =
        ctx.traceParentId === ''
          ? api.ROOT_CONTEXT
          : api.trace.setSpanContext(api.ROOT_CONTEXT, { traceId: nextTraceId, spanId: ctx.traceParentId, traceFlags: api.TraceFlags.SAMPLED, isRemote: true });
      const { req } = ctx;
      const attributes: import('@opentelemetry/api').Attributes = {
        'http.request.method': req.method ?? '',
        'url.scheme': ctx.scheme,
        'url.path': ctx.path,
        'server.address': ctx.host,
        'client.address': ctx.clientAddress(),
        'network.protocol.version': req.httpVersionMajor === 2 ? '2' : req.httpVersion,
        'http.response.status_code': ctx.status,
        'http.response.body.size': ctx.bytesSent,
        'portico.request_id': ctx.requestId,
      };
      const agent = req.headers['user-agent'];
      if (agent !== undefined) attributes['user_agent.original'] = agent;
      if (ctx.upstreamLog !== undefined) attributes['portico.upstream.addresses'] = ctx.upstreamLog.map((attempt) => attempt.addr);
      if (ctx.cacheStatus !== '') attributes['portico.cache_status'] = ctx.cacheStatus;
      const span = tracer.startSpan(req.method ?? 'HTTP', { kind: api.SpanKind.SERVER, startTime: origin + ctx.start, attributes }, parent);
      if (ctx.status >= 500) span.setStatus({ code: api.SpanStatusCode.ERROR });
      span.end(origin + performance.now());
    },
    async close() {
      let timer: NodeJS.Timeout | undefined;
      const gaveUp = new Promise<'late'>((resolve) => {
        timer = setTimeout(() => resolve('late'), CLOSE_WAIT_MS);
      });
      const shutdown = provider.shutdown().then(
        () => 'done' as const,
        (err: unknown) => logger.warn({ err }, 'tracing: the last spans could not be exported'),
      );
      const outcome = await Promise.race([shutdown, gaveUp]);
      clearTimeout(timer);
      // An export still retrying ends at its own deadline (EXPORT_TIMEOUT_MS); its spans are lost.
      if (outcome === 'late') logger.warn({ otlp: config.otlp, waitedMs: CLOSE_WAIT_MS }, 'tracing: the collector did not take the last spans in time; they are dropped');
    },
  };
}
