import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { RoutePath } from '../../src/config/schema.js';
import { Router } from '../../src/server/router.js';

/** A route path as the config schema parses it: `= /x`, `^~ /x`, `~ re`, `~* re` or a plain prefix. */
function routePath(text: string): RoutePath {
  const regex = /^(~\*?)\s+(.+)$/.exec(text);
  if (regex !== null) return { kind: 'regex', regex: new RegExp(regex[2]!, regex[1] === '~*' ? 'i' : ''), text };
  const prefixed = /^(=|\^~)\s+(.*)$/.exec(text);
  const path = prefixed ? prefixed[2]! : text;
  if (prefixed?.[1] === '=') return { kind: 'exact', path, text };
  return { kind: 'prefix', path, stopRegex: prefixed?.[1] === '^~', text };
}

function router(...texts: string[]): Router<string> {
  return new Router(texts.map((text) => ({ path: routePath(text), route: text })));
}

function routeOf(r: Router<string>, path: string): string | undefined {
  const match = r.match(path);
  assert.equal(match?.redirectTo, undefined, `unexpected redirect for ${path}`);
  return match?.route;
}

describe('Router (nginx location rules)', () => {
  test('an exact route wins over every prefix and regex', () => {
    const r = router('/', '~ ^/x', '= /x', '^~ /x');
    assert.equal(routeOf(r, '/x'), '= /x');
    assert.equal(routeOf(r, '/xy'), '^~ /x');
  });

  test('the longest prefix wins whatever the config order', () => {
    const r = router('/', '/a/', '/a/b/', '/a/b/c');
    assert.equal(routeOf(r, '/a/b/c/d'), '/a/b/c');
    assert.equal(routeOf(r, '/a/b/x'), '/a/b/');
    assert.equal(routeOf(r, '/a/x'), '/a/');
    assert.equal(routeOf(r, '/z'), '/');
  });

  test('a prefix is a plain string prefix: /img matches /imgs', () => {
    const r = router('/img');
    assert.equal(routeOf(r, '/imgs/a.png'), '/img');
    assert.equal(routeOf(r, '/img'), '/img');
  });

  test('a regex route beats a plain prefix; the first matching regex in config order wins', () => {
    const r = router('/', '/static/', '~ \\.png$', '~ ^/static/.*\\.png$');
    assert.equal(routeOf(r, '/static/a.png'), '~ \\.png$');
    assert.equal(routeOf(r, '/static/a.css'), '/static/');
  });

  test('a ^~ prefix that is the longest match stops the regex search', () => {
    const r = router('/', '^~ /static/', '~ \\.png$');
    assert.equal(routeOf(r, '/static/a.png'), '^~ /static/');
    assert.equal(routeOf(r, '/other/a.png'), '~ \\.png$');
  });

  test('a ^~ prefix does not stop regexes when a longer plain prefix matched', () => {
    const r = router('^~ /a/', '/a/b/', '~ \\.png$');
    assert.equal(routeOf(r, '/a/b/x.png'), '~ \\.png$');
  });

  test('~* is case-insensitive, ~ is not', () => {
    const r = router('/', '~* \\.JPG$', '~ \\.Gif$');
    assert.equal(routeOf(r, '/a.jpg'), '~* \\.JPG$');
    assert.equal(routeOf(r, '/a.gif'), '/');
  });

  test('no route matches: undefined', () => {
    const r = router('/api/', '= /x');
    assert.equal(r.match('/other'), undefined);
  });

  test('/api is redirected to /api/ when the prefix route /api/ exists', () => {
    const r = router('/', '/api/');
    assert.deepEqual(r.match('/api'), { redirectTo: '/api/' });
  });

  test('/api is not redirected when an exact, an equal prefix or a regex route takes it', () => {
    assert.equal(routeOf(router('/api/', '= /api'), '/api'), '= /api');
    assert.equal(routeOf(router('/api/', '/api'), '/api'), '/api');
    assert.equal(routeOf(router('/api/', '~ ^/api$'), '/api'), '~ ^/api$');
  });

  test('property: with only prefix routes, the match is the longest prefix of the path', () => {
    const segment = fc.constantFrom('a', 'b', 'ab');
    const prefix = fc
      .tuple(fc.array(segment, { maxLength: 3 }), fc.boolean())
      .map(([s, slash]) => ('/' + s.join('/') + (slash ? '/' : '')).replace('//', '/'));
    fc.assert(
      fc.property(fc.uniqueArray(prefix, { minLength: 1, maxLength: 6 }), fc.array(segment, { maxLength: 4 }), fc.boolean(), (prefixes, parts, slash) => {
        const r = router(...prefixes);
        const path = ('/' + parts.join('/') + (slash ? '/' : '')).replace('//', '/');
        const expected = prefixes.filter((p) => path.startsWith(p)).sort((a, b) => b.length - a.length)[0];
        const match = r.match(path);
        if (match?.redirectTo !== undefined) {
          // Only when `path + '/'` is a configured prefix longer than any prefix that matched.
          assert.ok(prefixes.includes(path + '/'));
          assert.ok(!prefixes.includes(path), 'a prefix equal to the path is served, not redirected');
        } else {
          assert.ok(path === '/' || !prefixes.includes(path + '/') || prefixes.includes(path), `${path} must be redirected`);
          assert.equal(match?.route, expected);
        }
      }),
      { numRuns: 1000 },
    );
  });
});
