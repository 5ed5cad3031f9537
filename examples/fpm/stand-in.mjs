// A FastCGI stand-in for PHP-FPM, for machines without PHP (fpm/start.sh runs it then): it speaks FastCGI on
// 127.0.0.1:$PORT as a PHP-FPM pool does and answers every request with a page saying what it was asked (the CGI
// variables Portico sent), so that the showcase's php route, its balancing and its checks run. Not a PHP: install
// php-fpm (apt install php-fpm) to run examples/php/*.php.
import net from 'node:net';
import { decodeNameValuePairs, encodeStream, FLAG_KEEP_CONN, RecordParser, RecordType } from '../../dist/src/upstream/fastcgi/records.js';

const port = Number(process.env.PORT ?? 9001);
const slot = process.env.PORTICO_SLOT ?? 'stand-in';

const escape = (text) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function answer(params) {
  if (params.SCRIPT_NAME === '/fpm-ping') return 'Content-Type: text/plain\r\n\r\npong';
  const rows = ['SCRIPT_NAME', 'SCRIPT_FILENAME', 'REQUEST_URI', 'PATH_INFO', 'QUERY_STRING', 'REQUEST_METHOD', 'REMOTE_ADDR', 'HTTP_HOST']
    .map((name) => `<tr><th>${name}</th><td>${escape(params[name] ?? '')}</td></tr>`)
    .join('');
  return `Content-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\nX-Served-By: ${slot}\r\n\r\n<!doctype html><meta charset="utf-8"><title>FastCGI stand-in</title>
<h1>PHP-FPM is not installed on this machine</h1>
<p>This page comes from a FastCGI stand-in written in Node (examples/fpm/stand-in.mjs), in slot <b>${escape(slot)}</b>, which Portico
started, checked and spoke FastCGI to as it would to PHP-FPM. Install it (<code>apt install php-fpm</code>) and restart
<code>npm start</code> to run examples/php/.</p><table>${rows}</table>`;
}

net
  .createServer((socket) => {
    const requests = new Map();
    const parser = new RecordParser(({ type, requestId, content }) => {
      if (type === RecordType.BeginRequest) {
        requests.set(requestId, { params: [], keep: (content[2] & FLAG_KEEP_CONN) !== 0 });
      } else if (type === RecordType.Params && content.length > 0) {
        requests.get(requestId)?.params.push(Buffer.from(content));
      } else if (type === RecordType.Stdin && content.length === 0) {
        const request = requests.get(requestId);
        if (request === undefined) return;
        requests.delete(requestId);
        const pairs = decodeNameValuePairs(Buffer.concat(request.params));
        const params = {};
        for (let i = 0; i + 1 < pairs.length; i += 2) params[pairs[i]] = pairs[i + 1];
        const end = Buffer.alloc(8);
        const stdout = [...encodeStream(RecordType.Stdout, requestId, Buffer.from(answer(params))), ...encodeStream(RecordType.Stdout, requestId, Buffer.alloc(0))];
        socket.write(Buffer.concat([...stdout, ...encodeStream(RecordType.EndRequest, requestId, end)]));
        if (!request.keep) socket.end();
      }
    });
    socket.on('data', (chunk) => {
      try {
        parser.push(chunk);
      } catch {
        socket.destroy();
      }
    });
    socket.on('error', () => socket.destroy());
  })
  .listen(port, '127.0.0.1', () => console.log(`FastCGI stand-in (${slot}) on 127.0.0.1:${port}`));

// Portico stops PHP-FPM with SIGQUIT (its graceful stop); the stand-in ends on it, or SIGTERM, at once.
for (const signal of ['SIGQUIT', 'SIGTERM']) process.on(signal, () => process.exit(0));
