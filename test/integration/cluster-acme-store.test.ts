/**
 * What the cluster's ACME store (tls/acme-cluster.ts) makes of values in Redis that are not a certificate's, against a
 * real redis-server: a corrupt `not_after` must not keep every box from storing the certificate it ordered.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterLink } from '../../src/cluster/link.js';
import { AcmeCluster } from '../../src/tls/acme-cluster.js';
import { RedisServer } from '../helpers/redis.js';
import { capturingLogger } from '../helpers/pebble.js';
import { requireTool } from '../helpers/tools.js';
import { eventually } from '../helpers/supervise.js';

const SECRET = 'test-cluster-secret-0123456789abcdef0123456789';

test('a stored certificate whose not_after is not a number is written over; a newer stored one still wins', async (t) => {
  if (!requireTool(t, 'redis-server')) return;
  const redis = await RedisServer.start();
  const link = new ClusterLink({ redis: redis.url, prefix: 'test:acme-store', name: 'a', timeoutMs: 200 }, capturingLogger().logger);
  const acme = new AcmeCluster(link, SECRET, 30_000, capturingLogger().logger);
  try {
    link.start();
    await eventually(() => link.up, 'link up');
    const key = 'test:acme-store:acme:cert:site';
    const notAfter = Date.now() + 90 * 86_400_000;
    for (const bad of ['soon', '', 'nan']) {
      await link.redis.hset(key, 'not_after', bad, 'cert', 'garbage');
      assert.equal(await acme.writeCertificate('site', 'CERT', 'KEY', notAfter, '01'), true, `written over not_after ${JSON.stringify(bad)}`);
      assert.equal(await link.redis.hget(key, 'cert'), 'CERT');
      await link.redis.del(key);
    }
    await acme.writeCertificate('site', 'LATER', 'KEY', notAfter + 1000, '02');
    assert.equal(await acme.writeCertificate('site', 'EARLIER', 'KEY', notAfter, '03'), false, 'one lasting longer stays');
    assert.equal(await link.redis.hget(key, 'cert'), 'LATER');
  } finally {
    acme.stop();
    await link.stop();
    await redis.stop();
  }
});
