/** `intercept_errors`' pure parts: which statuses a setting means, the fields an error page keeps, the read-out budget. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { interceptedStatuses, keptFields, READ_OUT_LIMIT, readOutBudget } from '../../src/handlers/proxy/intercept.js';

const raw = (...pairs: string[]): Buffer[] => pairs.map((text) => Buffer.from(text, 'latin1'));

test('interceptedStatuses: false or [] is none, true every 400-599, a list its own statuses', () => {
  assert.equal(interceptedStatuses(false), undefined);
  assert.equal(interceptedStatuses([]), undefined);
  const all = interceptedStatuses(true)!;
  assert.equal(all.size, 200);
  assert.ok(all.has(400) && all.has(599) && !all.has(399) && !all.has(600) && !all.has(304));
  assert.deepEqual([...interceptedStatuses([404, 500])!], [404, 500]);
});

test('keptFields: Retry-After, WWW-Authenticate (each one), Allow and Content-Range pass; nothing else does', () => {
  const kept = keptFields(
    raw('Server', 'Apache Tomcat/10.1.55', 'Retry-After', '120', 'WWW-Authenticate', 'Basic realm="a"', 'www-authenticate', 'Bearer', 'Set-Cookie', 'JSESSIONID=1', 'Allow', 'GET', 'Content-Range', 'bytes */9', 'Content-Type', 'text/html'),
  );
  assert.deepEqual(kept, { 'Retry-After': '120', 'WWW-Authenticate': ['Basic realm="a"', 'Bearer'], Allow: 'GET', 'Content-Range': 'bytes */9' });
  assert.equal(keptFields(raw('Server', 'Tomcat', 'Content-Length', '5')), undefined);
  // A stored response's flat list of strings reads the same.
  assert.deepEqual(keptFields(['retry-after', '5', 'X-App', 'y']), { 'Retry-After': '5' }, 'named in Title-Case whatever the app wrote');
});

test('readOutBudget: up to the limit by Content-Length or without one, -1 (close) beyond it', () => {
  assert.equal(readOutBudget(raw('Content-Length', '512')), READ_OUT_LIMIT);
  assert.equal(readOutBudget(raw('content-length', String(READ_OUT_LIMIT))), READ_OUT_LIMIT);
  assert.equal(readOutBudget(raw('Content-Length', String(READ_OUT_LIMIT + 1))), -1);
  assert.equal(readOutBudget(raw('Transfer-Encoding', 'chunked')), READ_OUT_LIMIT);
});
