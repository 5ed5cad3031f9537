import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileChain, type Link } from '../../src/handlers/chain.js';
import type { Handler, RequestContext } from '../../src/http/context.js';

/** A stand-in context: the chain only passes it along. */
const ctx = { trace: [] as string[] } as unknown as RequestContext & { trace: string[] };

function link(stage: Link['stage'], name: string): Link {
  return {
    stage,
    middleware: async (c, next) => {
      (c as typeof ctx).trace.push(`${name} in`);
      await next(c);
      (c as typeof ctx).trace.push(`${name} out`);
    },
  };
}

describe('compileChain', () => {
  test('an empty chain is the handler itself (no wrapper, no cost)', () => {
    const handler: Handler = () => {};
    assert.equal(compileChain([], handler), handler);
  });

  test('links run in the fixed stage order access → auth → rate_limit → body_size → cache → compress, whatever order they are given in', async () => {
    ctx.trace.length = 0;
    const handler: Handler = (c) => void (c as typeof ctx).trace.push('handler');
    const chain = compileChain([link('compress', 'compress'), link('rate_limit', 'rate'), link('access', 'access'), link('cache', 'cache'), link('body_size', 'body'), link('auth', 'auth')], handler);
    await chain(ctx);
    assert.deepEqual(ctx.trace, ['access in', 'auth in', 'rate in', 'body in', 'cache in', 'compress in', 'handler', 'compress out', 'cache out', 'body out', 'rate out', 'auth out', 'access out']);
  });

  test('a link that answers itself stops the chain: later links and the handler do not run', async () => {
    ctx.trace.length = 0;
    const deny: Link = { stage: 'access', middleware: (c) => void (c as typeof ctx).trace.push('denied') };
    const chain = compileChain([link('rate_limit', 'rate'), deny], () => void ctx.trace.push('handler'));
    await chain(ctx);
    assert.deepEqual(ctx.trace, ['denied']);
  });

  test('two links at one stage are refused when the chain is compiled', () => {
    assert.throws(() => compileChain([link('auth', 'a'), link('auth', 'b')], () => {}), /two middlewares at stage auth/);
  });
});
