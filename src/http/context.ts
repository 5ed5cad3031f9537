/**
 * The request context and the handler contract. A context is created once per request by the app, matched to
 * a site and a route, then handed to the route's handler chain, which was compiled when the config was loaded.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { connectionPeer, type TrustedProxies } from './client-address.js';
import { NOT_FORWARDED, readForwarded, type ForwardedView } from './forwarded.js';
import { canonicalAuthority } from './hosts.js';
import { parseTraceparent, startTraceparent } from './request-identity.js';

declare module 'node:http2' {
  interface Http2ServerResponse {
    /**
     * Node 20 takes HTTP/1's flat `[name, value, …]` list here too (its compat layer turns it into an object);
     * @types/node declares only the object form. `test/integration/h2-handlers.test.ts` checks it.
     */
    writeHead(statusCode: number, headers?: OutgoingHttpHeaders | string[]): this;
  }
}

/**
 * What Portico reads of a request, the same over HTTP/1 (`IncomingMessage`) and HTTP/2 (Node's compat
 * `Http2ServerRequest`, whose `headers` and `rawHeaders` also hold the pseudo-fields `:method`, `:path`,
 * `:authority`, `:scheme`). The body is the stream itself.
 */
export interface ClientRequest extends Readable {
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: string[];
  readonly method?: string | undefined;
  readonly url?: string | undefined;
  readonly httpVersion: string;
  readonly httpVersionMajor: number;
  readonly httpVersionMinor: number;
  readonly socket: Socket;
  /** The whole body arrived. */
  readonly complete: boolean;
}

/**
 * What Portico uses of a response, the same over HTTP/1 (`ServerResponse`) and HTTP/2 (`Http2ServerResponse`).
 * The differences that matter are behind `isH2Response`, `responseCut` and `responseComplete`: an h2 response has
 * no `destroyed`, and says `writableFinished` even when the client reset its stream.
 */
export interface ClientResponse extends Writable {
  statusCode: number;
  readonly headersSent: boolean;
  writeHead(statusCode: number, headers?: OutgoingHttpHeaders | string[]): this;
  setHeader(name: string, value: number | string | readonly string[]): unknown;
  removeHeader(name: string): void;
  getHeaderNames(): string[];
  getHeader(name: string): number | string | string[] | undefined;
  hasHeader(name: string): boolean;
  writeContinue(): void;
  writeEarlyHints(hints: Record<string, string | string[]>): void;
  /** Fields sent after the body (HTTP/2 trailers; over HTTP/1.1 only with a chunked body, else dropped). */
  addTrailers(headers: OutgoingHttpHeaders | ReadonlyArray<[string, string]>): void;
}

/** An HTTP/2 response, with its stream. */
export type H2Response = ClientResponse & Pick<Http2ServerResponse, 'stream'>;

/** Whether a response is HTTP/2's (which carries its stream). */
export function isH2Response(res: ClientResponse): res is H2Response {
  return (res as Partial<Http2ServerResponse>).stream !== undefined;
}

/** Whether an h2 request came without a body (its HEADERS frame ended the stream); false over HTTP/1. */
export function h2EndedWithHeaders(res: ClientResponse): boolean {
  return isH2Response(res) && res.stream.endAfterHeaders;
}

/** `NGHTTP2_NO_ERROR`: the code of an h2 stream that closed normally, or of a reset that is no error. */
export const H2_NO_ERROR = 0;

/**
 * Whether the response can no longer be written: the client went away (HTTP/1: the socket is destroyed; h2: the
 * stream is closed, by a reset or the end of its session).
 */
export function responseCut(res: ClientResponse): boolean {
  return (isH2Response(res) ? res.stream.closed || res.stream.destroyed : res.destroyed) && !responseComplete(res);
}

/** Whether the whole response went out (h2: its stream ended without a reset). */
export function responseComplete(res: ClientResponse): boolean {
  return isH2Response(res) ? res.writableEnded && res.stream.closed && res.stream.rstCode === H2_NO_ERROR : res.writableFinished;
}

/** Where a request's outcome is counted (a route's traffic figures: see metrics/traffic.ts). */
export interface TrafficRecorder {
  record(status: number, ms: number): void;
  /** A gRPC call that ended with this `grpc-status` (a route's recorder counts them). */
  recordGrpc?(status: string): void;
}

/** Per-request state shared by the handlers of one chain. */
export class RequestContext {
  /** Canonical path (see `normalizePath`). */
  path = '/';
  /** Query string without `?`, as received. */
  query = '';
  /** Lower-cased host without port, from the absolute-form target or `Host`; `''` when absent. */
  host = '';
  /** The authority of an absolute-form target (`GET http://a.example/x`), which wins over `Host`; see `authority`. */
  targetAuthority: string | undefined = undefined;
  /** Response status, set by whoever answered (for the access log). */
  status = 0;
  /** Body bytes sent, as far as the handler knows (for the access log). */
  bytesSent = 0;
  /**
   * The body of an answer sent whole from memory (a stored response, a file held in memory), set by `sendWhole`:
   * the same Buffer each time that answer is sent, so a response transform (compression) may key work it reuses on it.
   */
  wholeBody: Buffer | undefined = undefined;
  /** Site-level error pages (status → page), set by the app when the site is matched. */
  errorPages: ReadonlyMap<number, Buffer> | undefined = undefined;
  /** One entry per upstream attempt, filled in by the proxy handler (for the access log). */
  upstreamLog: UpstreamAttemptLog[] | undefined = undefined;
  /** Set by the app when it listens for the response's `close` itself (and then calls `clientClosed()`). */
  closeWatched = false;
  /** Largest request body accepted, in bytes, set by the route's body-size link; whoever reads the body stops it there. */
  bodyLimit = Infinity;
  /** Set by a handler that reads the request body (the proxy); a body nobody claims is discarded, within `bodyLimit`. */
  bodyClaimed = false;
  /** Set by `basic_auth` when the Authorization field carried Portico's own credentials: not forwarded to the app. */
  credentialsConsumed = false;
  /** The matched route's traffic figures, set by the app when counting is on (`admin` configured). */
  traffic: TrafficRecorder | undefined = undefined;
  /** The request's `X-Request-Id` (the client's, when kept, or a new one): sent upstream, echoed, logged. */
  requestId = '';
  /**
   * What the cache did (the RFC 9211 Cache-Status parameters Portico sent: `hit`, `fwd=miss`, …), `''` when no
   * cache was asked; `$cache_status` in the log.
   */
  cacheStatus = '';
  /**
   * The `grpc-status` a gRPC call's answer ended with, when it went out in trailers (or in a gRPC-Web answer);
   * `''` otherwise. `$grpc_status` in the log (which reads a Trailers-Only answer's status from its head).
   */
  grpcStatus = '';
  /**
   * The `traceparent` sent upstream, once known (see `traceparent`); set when the context is made when Portico
   * records spans (`tracing`), else worked out on first use.
   */
  traceMemo: string | undefined = undefined;
  /** The client's `tracestate` is passed on: its `traceparent` was valid. */
  traceStateKept = false;
  /** The TLS version of the connection (`TLSv1.3`), read when the request arrives if the access log uses it. */
  tlsVersion: string | undefined = undefined;
  /** With `tracing`: Portico records a span for this request (it is sampled). */
  traceSampled = false;
  /** With `tracing`: the span id of the client's `traceparent`, the parent of Portico's span (`''`: a root span). */
  traceParentId = '';
  #onGone: (() => void) | undefined = undefined;
  /** Worked out on first use; a plain field, so a context derived with Object.create (cache invalidation) reads it too. */
  private clientAddressMemo: string | undefined = undefined;
  private peerMemo: string | undefined = undefined;
  private forwardedMemo: ForwardedView | undefined = undefined;
  private canonicalAuthorityMemo: string | undefined = undefined;
  constructor(
    readonly req: ClientRequest,
    readonly res: ClientResponse,
    readonly scheme: 'http' | 'https',
    /** `performance.now()` when the request arrived. */
    readonly start: number,
    /** Value of the `Server` header for answers Portico makes itself (`''` = none). */
    readonly serverHeader: string = '',
    /** Peers whose forwarding headers are believed (none when undefined). */
    readonly trusted: TrustedProxies | undefined = undefined,
  ) {}

  /**
   * Runs `fn` if the client goes away before its response is finished. Shares the app's one `close` listener
   * when there is one (the access log's), instead of adding a listener per request.
   */
  onClientGone(fn: () => void): void {
    // Already gone (say, during an asynchronous lookup): no `close` will come any more.
    if (responseCut(this.res)) return fn();
    if (!this.closeWatched) {
      this.res.once('close', () => {
        if (!responseComplete(this.res)) fn();
      });
      return;
    }
    const previous = this.#onGone;
    this.#onGone =
      previous === undefined
        ? fn
        : () => {
            previous();
            fn();
          };
  }

  /** The response closed before it finished (called by whoever set `closeWatched`). */
  clientClosed(): void {
    this.#onGone?.();
  }

  /**
   * The connection's peer (`::ffff:` prefix of a mapped IPv4 address removed): the TCP peer, or on a
   * `proxy_protocol` listener the client address the balancer's header gave.
   */
  peerAddress(): string {
    // Worked out once: an h2 request's socket is a view of its session's, gone once the stream closes (the access
    // log's `$connection_peer` is read then; the app reads the client address, and so this, when the request arrives).
    if (this.peerMemo === undefined) this.peerMemo = connectionPeer(this.req.socket);
    return this.peerMemo;
  }

  /** The client's address: the peer, or behind a trusted proxy the address it forwarded (worked out once). */
  clientAddress(): string {
    if (this.clientAddressMemo === undefined) {
      const peer = this.peerAddress();
      this.clientAddressMemo = this.trusted === undefined ? peer : this.trusted.clientAddress(peer, this.req.headers['x-forwarded-for'] as string | undefined);
    }
    return this.clientAddressMemo;
  }

  /**
   * What a trusted proxy forwarded of the client-facing host and scheme, as the app is told it and the cache keys
   * it (worked out once); `NOT_FORWARDED` when the peer is not trusted or sent none.
   */
  forwarded(): ForwardedView {
    if (this.forwardedMemo === undefined) {
      const trusted = this.trusted;
      this.forwardedMemo =
        trusted === undefined || trusted.empty || !trusted.has(this.peerAddress())
          ? NOT_FORWARDED
          : readForwarded(this.req.rawHeaders, this.canonicalAuthority, this.scheme);
    }
    return this.forwardedMemo;
  }

  /**
   * The one authority (host and port as the client wrote it) that chose the site: the absolute-form target's,
   * else `Host` (RFC 9112 §3.2.2), never a `Host` that lost to the target. What is passed on is its canonical
   * form, `canonicalAuthority`.
   */
  get authority(): string {
    return this.targetAuthority ?? this.req.headers.host ?? this.host;
  }

  /**
   * The authority in canonical form (`canonicalAuthority`: lower case, no trailing dot, a port only when not the
   * scheme's default): what an app server is told in Host, X-Forwarded-Host and Forwarded, what a rewritten
   * Location names, and (its port) part of the cache key, so that no spelling of one site's Host is stored for all.
   */
  get canonicalAuthority(): string {
    // Asked for up to four times per proxied request (cache key, forwarded view, headers, Location): made once.
    return (this.canonicalAuthorityMemo ??= canonicalAuthority(this.host, this.authority, this.scheme));
  }

  /**
   * The W3C `traceparent` this request carries on (to the app, in `$traceparent`). Without `tracing`, a valid one
   * from the client passes unchanged, and one is started when there is none (or it is invalid), not sampled
   * (flags `00`: Portico recorded nothing, so it names no sampled parent), the client's `tracestate` then dropped.
   */
  get traceparent(): string {
    if (this.traceMemo === undefined) {
      const value = this.req.headers.traceparent;
      if (value !== undefined && parseTraceparent(value) !== undefined) {
        this.traceMemo = value as string;
        this.traceStateKept = true;
      } else this.traceMemo = startTraceparent();
    }
    return this.traceMemo;
  }

  /** `path?query` as the client asked for it, canonicalised. */
  get uri(): string {
    return this.query === '' ? this.path : `${this.path}?${this.query}`;
  }
}

/** What the access log records of one attempt to an upstream server (times in ms, -1 when not reached). */
export interface UpstreamAttemptLog {
  addr: string;
  status: string;
  connectMs: number;
  headerMs: number;
  responseMs: number;
}

/** The end of a chain: answers the request. */
export type Handler = (ctx: RequestContext) => Promise<void> | void;

/**
 * A link in a route's chain: sees the request on the way in; answers it itself (a 403, a 429) or calls `next`
 * (the rest of the chain, compiled once) and may act once it has run. `next` is a compiled handler, not a
 * closure made per request.
 */
export type Middleware = (ctx: RequestContext, next: Handler) => Promise<void> | void;
