/** Interim answers passed on to the client: a 103 Early Hints (RFC 8297). */
import { responseCut, type RequestContext } from '../../http/context.js';

/**
 * Sends a 103 with these Link values to the client: only over HTTP/1.1 or HTTP/2 (an HTTP/1.0 client cannot take
 * a 1xx, RFC 9110 §15.2) and while the final head is not sent. A Link that Node refuses drops the hint (hints are
 * advisory; the final answer is what counts).
 */
export function sendEarlyHints(ctx: RequestContext, links: string[]): void {
  const { req, res } = ctx;
  if (res.headersSent || responseCut(res) || (req.httpVersionMajor === 1 && req.httpVersionMinor !== 1)) return;
  try {
    res.writeEarlyHints({ link: links });
  } catch {
    // A Link value outside what Node accepts: no hint.
  }
}
