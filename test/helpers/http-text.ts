/**
 * One HTTP/1.1 request to a server on 127.0.0.1, by default on a connection of its own (how requests are spread
 * over `workers: N`), answered with its status and body as text.
 */
import http from 'node:http';

/** A status and a body read to its end. */
export interface TextAnswer {
  status: number;
  body: string;
}

/** How `requestText` asks. */
export interface TextRequestOptions {
  /** Default GET. */
  method?: string;
  /** Default `false`: a connection of its own. */
  agent?: http.Agent | false;
  /** The Host field; default Node's (`127.0.0.1:port`). */
  host?: string;
  /** How long the request may wait for the server; default 5000 ms, then it fails. */
  timeoutMs?: number;
}

/** Sends `target` to 127.0.0.1:`port`; resolves with the status and body once the answer has ended. */
export function requestText(port: number, target: string, options: TextRequestOptions = {}): Promise<TextAnswer> {
  const { method = 'GET', agent = false, host, timeoutMs = 5000 } = options;
  return new Promise((resolve, reject) => {
    const headers = host === undefined ? undefined : { host };
    const req = http.request({ host: '127.0.0.1', port, path: target, method, agent, headers, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${target} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}
