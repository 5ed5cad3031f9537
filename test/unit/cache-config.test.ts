/**
 * Cache configuration: a proxy route naming an unknown cache zone, and bad zone settings, are refused at load
 * with file:line:col and the key path; a valid cache config is fully defaulted.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { parseConfig } from '../../src/server/config.js';
import { configErrors } from '../helpers/config.js';
import { makeTree } from '../helpers/portico.js';
import { proxyKind } from '../../src/handlers/proxy/handler.js';
import { optionsOf } from '../../src/handlers/types.js';

const dir = makeTree({ 'cache/.keep': '' });
after(() => rmSync(dir, { recursive: true, force: true }));

function errorsOf(text: string): string[] {
  return configErrors(text, dir);
}

describe('cache config', () => {
  test('an unknown cache zone in proxy.cache is an error at its line, naming the zones defined', () => {
    const text = [
      'caches:',
      '  main: { memory: 1MB }',
      'sites:',
      '  - routes:',
      '      - path: /',
      '        proxy:',
      '          url: "http://127.0.0.1:9"',
      '          cache: { zone: mian }',
    ].join('\n');
    assert.deepEqual(errorsOf(text), ['portico.yaml:8:26 sites[0].routes[0].proxy.cache.zone: unknown cache "mian" (defined: main)']);
  });

  test('an unknown cache zone when none is defined says so', () => {
    const text = ['sites:', '  - routes:', '      - path: /', '        proxy: { url: "http://127.0.0.1:9", cache: { zone: main } }'].join('\n');
    const errors = errorsOf(text);
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /^portico\.yaml:4:\d+ sites\[0\]\.routes\[0\]\.proxy\.cache\.zone: unknown cache "main" \(no caches are defined\)$/);
  });

  test('unknown keys in a zone and in proxy.cache are refused', () => {
    const text = [
      'caches:',
      '  main: { memory: 1MB, size: 2MB }',
      'sites:',
      '  - routes:',
      '      - path: /',
      '        proxy: { url: "http://127.0.0.1:9", cache: { zone: main, ttl: 5s } }',
    ].join('\n');
    assert.deepEqual(errorsOf(text).sort(), [
      'portico.yaml:2:24 caches.main.size: unknown key',
      'portico.yaml:6:66 sites[0].routes[0].proxy.cache.ttl: unknown key',
    ]);
  });

  test('max_object larger than the memory tier is refused', () => {
    const text = ['caches:', '  main: { memory: 1MB, max_object: 2MB }', 'sites:', '  - routes:', '      - path: /', '        respond: { body: ok }'].join('\n');
    const errors = errorsOf(text);
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /^portico\.yaml:2:\d+ caches\.main\.max_object: max_object is larger than the memory tier$/);
  });

  test('a shared tier without a cluster is refused at its line', () => {
    const text = ['caches:', '  main:', '    memory: 1MB', '    shared: { max_object_size: 64KB }', 'sites:', '  - routes:', '      - path: /', '        respond: { body: ok }'].join('\n');
    const errors = errorsOf(text);
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /^portico\.yaml:4:\d+ caches\.main\.shared: a shared tier lives in the cluster's Redis: add a `cluster` section/);
  });

  test('a valid cache config is fully defaulted', () => {
    const text = [
      'caches:',
      `  main: { memory: 1MB, disk: { path: "${path.join(dir, 'cache')}" } }`,
      'sites:',
      '  - routes:',
      '      - path: /',
      '        proxy: { url: "http://127.0.0.1:9", cache: { zone: main } }',
    ].join('\n');
    const config = parseConfig(text, 'portico.yaml', dir);
    assert.equal(config.caches.main!.memory, 1024 * 1024);
    // max_object defaults to 16MB, but never beyond a smaller memory tier.
    assert.equal(config.caches.main!.max_object, 1024 * 1024);
    assert.equal(parseConfig(text.replace('memory: 1MB', 'memory: 64MB'), 'portico.yaml', dir).caches.main!.max_object, 16 * 1024 * 1024);
    const cache = optionsOf(proxyKind, config.sites[0]!.routes[0]!).cache!;
    assert.deepEqual(
      { ...cache },
      {
        zone: 'main',
        key: '$scheme$host$request_uri',
        default_ttl: 0,
        heuristic: false,
        default_ttl_with_credentials: false,
        stale_if_error: 0,
        stale_if_unreachable: 60_000,
        ignore_set_cookie: false,
        hit_for_miss: 10_000,
        collapse: true,
        targeted: ['Portico-Cache-Control'],
      },
    );
  });

  test('targeted lists header field names; Cache-Control itself is not a targeted field', () => {
    const route = (targeted: string) =>
      ['caches:', '  main: { memory: 1MB }', 'sites:', '  - routes:', '      - path: /', `        proxy: { url: "http://127.0.0.1:9", cache: { zone: main, targeted: ${targeted} } }`].join('\n');
    const config = parseConfig(route('[CDN-Cache-Control, Portico-Cache-Control]'), 'portico.yaml', dir);
    assert.deepEqual(optionsOf(proxyKind, config.sites[0]!.routes[0]!).cache!.targeted, ['CDN-Cache-Control', 'Portico-Cache-Control']);
    assert.match(errorsOf(route('["bad name"]')).join('\n'), /cache\.targeted\[0\]: a header field name/);
    assert.match(errorsOf(route('[Cache-Control]')).join('\n'), /cache\.targeted\[0\]: Cache-Control is not a targeted field/);
  });
});
