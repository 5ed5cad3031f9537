import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { TrustedProxies } from '../../src/http/client-address.js';
import { RequestContext } from '../../src/http/context.js';
import { compileTemplate } from '../../src/http/template.js';

function context(headers: Record<string, string> = {}, peer = '10.0.0.9'): RequestContext {
  const req = { method: 'GET', headers, socket: { remoteAddress: peer } } as unknown as IncomingMessage;
  const ctx = new RequestContext(req, {} as ServerResponse, 'https', 0, '', new TrustedProxies(['10.0.0.0/8']));
  ctx.host = 'example.com';
  ctx.path = '/a/b';
  ctx.query = 'x=1&user=ann';
  return ctx;
}

describe('compileTemplate (one variable list for redirects, headers, hash and cache keys)', () => {
  test('every documented variable', () => {
    const ctx = context({ cookie: 'sid=abc; other=1', 'x-user': 'bob', 'x-forwarded-for': '203.0.113.5' });
    const render = compileTemplate('$scheme|$host|$method|$request_uri|$uri|$args|$remote_addr|$cookie_sid|$header_x_user|$arg_user');
    assert.equal(render(ctx), 'https|example.com|GET|/a/b?x=1&user=ann|/a/b|x=1&user=ann|203.0.113.5|abc|bob|ann');
  });

  test('a fixed name followed by more letters is literal text ($hostname, $uri_old, $schemes), as the docs say', () => {
    assert.equal(compileTemplate('https://$hostname/$uri_old/$schemes')(context()), 'https://$hostname/$uri_old/$schemes');
  });

  test('missing cookie, header or parameter is empty; text without variables is returned as is', () => {
    assert.equal(compileTemplate('[$cookie_none][$header_none][$arg_none]')(context()), '[][][]');
    assert.equal(compileTemplate('/plain')(context()), '/plain');
  });
});
