/** Request bodies on their way upstream: read whole for replay, or streamed under a size limit. */
import type { ClientRequest } from '../../http/context.js';
import { Transform, type Readable } from 'node:stream';
import { PorticoError } from '../../errors.js';

/** Reads a whole small body of a known length; `null` when the client sent less and closed. */
export function readBody(req: ClientRequest, length: number): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let received = 0;
    req.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
    });
    req.once('end', () => resolve(received === length ? Buffer.concat(chunks, received) : null));
    req.once('error', () => resolve(null));
    req.once('close', () => {
      if (!req.complete) resolve(null);
    });
  });
}

/** Counts a streamed (chunked) body and stops it at `limit`. */
export function limitBody(req: ClientRequest, limit: number, onExceeded: () => void): Readable {
  // A pass-through, not a 'data' listener on `req`: a listener would switch `req` to flowing mode and every chunk
  // arriving before undici starts reading the body would be lost.
  let received = 0;
  const limited = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      received += chunk.length;
      if (received <= limit) return callback(null, chunk);
      // The 413 goes out with Connection: close; Node discards the rest of the body when it closes the socket.
      onExceeded();
      req.unpipe(limited);
      req.resume();
      callback(new PorticoError('PORTICO_PAYLOAD_TOO_LARGE', 'request body too large'));
    },
  });
  // Not `pipeline()`: that would destroy `req`, and with it the socket the 413 is written to.
  req.pipe(limited);
  req.once('error', (err) => limited.destroy(err));
  req.once('close', () => {
    if (!req.complete) limited.destroy(new PorticoError('PORTICO_CLIENT_CLOSED', 'client closed the request body'));
  });
  return limited;
}
