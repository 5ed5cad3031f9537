/**
 * gRPC-Web (a browser's gRPC, as Envoy's grpc_web filter translates it): a call in `application/grpc-web[+proto]`
 * or `-text` (base64) goes to the app as gRPC over HTTP/2, and its answer comes back in the client's form, the
 * app's trailers as a last frame of the body (flag 0x80). Only towards HTTP/2 app servers.
 */
import { Transform, type Readable } from 'node:stream';
import type { RequestContext } from '../../http/context.js';
import { Base64Chunks, grpcStatusIn, grpcTypeOfWeb, grpcWebKind, grpcWebTrailerFrame, webTypeOfGrpc } from '../../http/grpc.js';
import { ClientSink, type ResponseBuffering } from './sink.js';

/** The gRPC-Web form of a request (a POST with a gRPC-Web content-type), or undefined. */
export function grpcWebOf(ctx: RequestContext): 'binary' | 'text' | undefined {
  return ctx.req.method === 'POST' ? grpcWebKind(ctx.req.headers) : undefined;
}

/**
 * Rewrites a gRPC-Web request's header list for the app: gRPC's content-type (the transport adds `te: trailers`),
 * and no Content-Length (a text body is shorter once decoded; HTTP/2 frames the body anyway).
 */
export function toGrpcHeaders(headers: string[]): void {
  for (let i = 0; i < headers.length; i += 2) {
    const lower = headers[i]!.toLowerCase();
    if (lower === 'content-type') headers[i + 1] = grpcTypeOfWeb(headers[i + 1]!);
    else if (lower === 'content-length') {
      headers.splice(i, 2);
      i -= 2;
    }
  }
}

/** A gRPC-Web text body, decoded to the binary frames the app reads. */
export function decodeTextBody(body: Readable): Readable {
  const chunks = new Base64Chunks();
  const decoded = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      callback(null, chunks.push(chunk));
    },
  });
  body.once('error', (err) => decoded.destroy(err));
  return body.pipe(decoded);
}

/** The client sink of a gRPC-Web call: the app's gRPC answer in the client's form. */
export class GrpcWebSink extends ClientSink {
  constructor(
    ctx: RequestContext,
    buffering: ResponseBuffering,
    readonly kind: 'binary' | 'text',
  ) {
    super(ctx, buffering);
  }

  override head(status: number, appHeaders: string[], own: readonly string[]): void {
    const headers: string[] = [];
    for (let i = 0; i < appHeaders.length; i += 2) {
      const lower = appHeaders[i]!.toLowerCase();
      // The body gets a frame more (the trailers): no length of the app's holds.
      if (lower === 'content-length') continue;
      // A Trailers-Only answer: its status is in the head (an HTTP/1.1 client's head is not read back at log time).
      if (lower === 'grpc-status') this.ctx.grpcStatus = appHeaders[i + 1]!;
      headers.push(appHeaders[i]!, lower === 'content-type' ? webTypeOfGrpc(appHeaders[i + 1]!, this.kind) : appHeaders[i + 1]!);
    }
    super.head(status, headers, own);
  }

  override data(chunk: Buffer): boolean {
    return super.data(this.kind === 'text' ? Buffer.from(chunk.toString('base64'), 'latin1') : chunk);
  }

  protected override grpcCall(): boolean {
    return true;
  }

  /** Portico's status after the answer began: in the trailers frame, where a gRPC-Web client reads it. */
  protected override endGrpc(status: string, message: string): void {
    this.end(['grpc-status', status, 'grpc-message', encodeURIComponent(message)]);
  }

  override end(trailers?: readonly string[]): void {
    if (trailers !== undefined && trailers.length > 0) {
      this.ctx.grpcStatus = grpcStatusIn(trailers);
      const frame = grpcWebTrailerFrame(trailers);
      super.data(this.kind === 'text' ? Buffer.from(frame.toString('base64'), 'latin1') : frame);
    }
    super.end();
  }
}
