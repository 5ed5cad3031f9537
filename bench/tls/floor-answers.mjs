// What the TLS floors answer (floor-https.mjs, floor-h2.mjs): each file's bytes from a Buffer with its type and
// length, 404 for anything else — the same request handler over node:https and node:http2's compat API. Each
// floor gives the header shape it writes (`headersOf`), so its cost is its own API's usual one.
import { readFileSync } from 'node:fs';
import path from 'node:path';

/** A (req, res) handler answering `files` of `docroot` from memory, with `headersOf(body)` as each head. */
export function floorHandler(docroot, files, headersOf) {
  const answers = new Map(
    files.map((name) => {
      const body = readFileSync(path.join(docroot, name));
      return ['/' + name, { body, headers: headersOf(body) }];
    }),
  );
  return function floor(req, res) {
    const answer = answers.get(req.url);
    if (answer === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, answer.headers);
    res.end(answer.body);
  };
}
