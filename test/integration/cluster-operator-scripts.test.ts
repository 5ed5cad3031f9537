/**
 * The operator's Redis scripts (server/operator-shared.ts) against a real redis-server, with values in Redis that
 * are not Portico's (a corrupt or hand-written entry): each action must still be kept and published, since a
 * script that fails on one bad value blocked every later purge (or action on that server) of the whole cluster,
 * and made the link report Redis as unreachable.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { ADD_PURGE, PURGE_CAP, PURGE_KEEP_MS, SET_SERVER, fieldOf, parseOverride, parsePurge } from '../../src/server/operator-shared.js';
import { RedisServer } from '../helpers/redis.js';
import { requireTool } from '../helpers/tools.js';

test('a corrupt newest purge or server entry in Redis does not stop the next purge or action from being kept and published', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  const client = new Redis(redis.url, { maxRetriesPerRequest: 0 });
  const listener = new Redis(redis.url, { maxRetriesPerRequest: 0 });
  try {
    const purges = 't:operator:purges';
    const servers = 't:operator:servers';
    const channel = 't:ch:operator';
    const heard: string[] = [];
    listener.on('message', (_channel: string, message: string) => heard.push(message));
    await listener.subscribe(channel);

    for (const bad of ['not json{', '42', '{"at":{"x":1}}']) {
      await client.del(purges);
      await client.lpush(purges, bad);
      const [text, receivers] = (await client.eval(ADD_PURGE, 2, purges, channel, JSON.stringify({ id: 'p1', zone: 'main', target: { url: 'http://a/' } }), String(PURGE_CAP), String(PURGE_KEEP_MS), 'link', 'box1')) as [string, number];
      const kept = parsePurge(text);
      assert.ok(kept !== undefined && kept.at > 0, `the purge is kept after ${JSON.stringify(bad)}`);
      assert.equal(receivers, 1, 'and published');
      assert.equal(await client.lindex(purges, 0), text);
    }

    const field = fieldOf('app', 'a');
    for (const bad of ['not json{', '"text"', '{"admin":"draining","at":"soon"}']) {
      await client.hset(servers, field, bad);
      const [text, receivers] = (await client.eval(SET_SERVER, 2, servers, channel, field, JSON.stringify({ admin: 'draining' }), '', 'box1', 'link')) as [string, number];
      const entry = parseOverride(text);
      assert.equal(entry?.admin, 'draining', `the drain is kept over ${JSON.stringify(bad)}`);
      assert.equal(receivers, 1, 'and published');
      // A re-sync's change (stamped by the box) also replaces a corrupt entry.
      await client.hset(servers, field, bad);
      const [resynced] = (await client.eval(SET_SERVER, 2, servers, channel, field, JSON.stringify({ admin: 'disabled' }), '12345', 'box1', 'link')) as [string, number];
      assert.equal(parseOverride(resynced)?.at, 12345);
    }
    t.diagnostic(`${heard.length} messages published`);
  } finally {
    client.disconnect();
    listener.disconnect();
    await redis.stop();
  }
});
