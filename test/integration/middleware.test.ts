/**
 * A middleware kind registered like a handler kind is named by a route's key beside its handler, validated by
 * its own schema (errors at file:line:col), and compiled into the route's chain in stage order.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { z } from 'zod';
import { ConfigError } from '../../src/errors.js';
import { defineMiddleware } from '../../src/handlers/chain.js';
import { registerMiddlewareKind } from '../../src/handlers/index.js';
import { sendError } from '../../src/http/send.js';
import { parseConfig } from '../../src/server/config.js';
import { startPortico } from '../helpers/portico.js';

registerMiddlewareKind(
  defineMiddleware({
    kind: 'test_deny',
    stage: 'access',
    options: z.strictObject({ header: z.string() }),
    create(options) {
      const name = options.header.toLowerCase();
      return function testDeny(ctx, next) {
        if (ctx.req.headers[name] !== undefined) return sendError(ctx, 403);
        return next(ctx);
      };
    },
  }),
);
registerMiddlewareKind(
  defineMiddleware({
    kind: 'test_tag',
    stage: 'compress',
    options: z.strictObject({ value: z.string() }),
    create(options) {
      return function testTag(ctx, next) {
        ctx.res.setHeader('x-tag', options.value);
        return next(ctx);
      };
    },
  }),
);

describe('middleware kinds in a route', () => {
  test('a route runs its middlewares by stage (access before compress, whatever the key order) and then its handler', async () => {
    const portico = await startPortico(`sites:
  - routes:
      - path: /
        test_tag: { value: "t1" }
        respond: { body: "ok" }
        test_deny: { header: "x-deny" }
`);
    try {
      const ok = await fetch(portico.url);
      assert.equal(ok.status, 200);
      assert.equal(ok.headers.get('x-tag'), 't1');
      assert.equal(await ok.text(), 'ok');
      const denied = await fetch(portico.url, { headers: { 'x-deny': '1' } });
      assert.equal(denied.status, 403);
      assert.equal(denied.headers.get('x-tag'), null, 'the access stage answered before the compress stage ran');
    } finally {
      await portico.stop();
    }
  });

  test("a middleware's options are checked by its own schema, with the key's position", () => {
    assert.throws(
      () => parseConfig('sites:\n  - routes:\n      - path: /\n        respond: {}\n        test_deny: { hedaer: "x" }\n', 'portico.yaml', process.cwd()),
      (err: unknown) => err instanceof ConfigError && err.issues.some((i) => i.keyPath === 'sites[0].routes[0].test_deny.hedaer' && i.line === 5 && i.message === 'unknown key (did you mean "header"?)'),
    );
  });
});
