/**
 * A body read whole, but only up to a bound: what Portico reads of a peer it must not hold without limit (an admin
 * or control request's JSON, a gRPC health check's answer).
 */

/**
 * The body's bytes, or undefined once they pass `max`: the rest is not read (leaving the loop early destroys a
 * Readable, as its async iterator does); the caller says what that means.
 */
export async function readAtMost(body: AsyncIterable<Buffer>, max: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > max) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
