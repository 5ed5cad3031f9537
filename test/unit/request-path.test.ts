import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { decodeSegments, normalizePath, parseRequestTarget } from '../../src/http/request-path.js';

/** Path pieces that attackers and sloppy clients combine. */
const PIECES = [
  '/', '//', '.', '..', '%2e', '%2E', '%2e%2e', '.%2e', '%2f', '%2F', '%5c', '\\', '%00', '%', '%zz', '%4',
  '%25', '%252e', '%c0%ae', '%C3%A9', 'é', ';', ';/..', 'a', 'B', '~', '-', '_', '%61', '%7e', ' ', '"', '<',
  '{', '|', '^', '`', '@', ':', '+', '$', '&', '=', '!', "'", '(', '*', ',', '\x7f', '\x01',
];
const rawPath = fc.array(fc.constantFrom(...PIECES), { maxLength: 24 }).map((parts) => '/' + parts.join(''));

describe('normalizePath', () => {
  test('decodes percent-encoded unreserved characters: /%61pp/ is /app/', () => {
    assert.equal(normalizePath('/%61pp/'), '/app/');
    assert.equal(normalizePath('/%7Euser/%2D%5F'), '/~user/-_');
  });

  test('keeps reserved escapes, upper-cased: an encoded slash is never a separator', () => {
    assert.equal(normalizePath('/a%2fb'), '/a%2Fb');
    assert.equal(normalizePath('/a%2F..%2Fb'), '/a%2F..%2Fb');
    assert.equal(normalizePath('/x%3a%40'), '/x%3A%40');
  });

  test('merges repeated slashes: //app and ///a//b/ collapse', () => {
    assert.equal(normalizePath('//app'), '/app');
    assert.equal(normalizePath('///a//b/'), '/a/b/');
    assert.equal(normalizePath('//'), '/');
  });

  test('resolves dot segments and never climbs above the root', () => {
    assert.equal(normalizePath('/x/../app'), '/app');
    assert.equal(normalizePath('/a/./b'), '/a/b');
    assert.equal(normalizePath('/../../etc/passwd'), '/etc/passwd');
    assert.equal(normalizePath('/a/b/..'), '/a/');
    assert.equal(normalizePath('/a/.'), '/a/');
    assert.equal(normalizePath('/a/..'), '/');
    assert.equal(normalizePath('/..'), '/');
  });

  test('resolves percent-encoded dot segments (%2e%2e is ..)', () => {
    assert.equal(normalizePath('/a/%2e%2e/b'), '/b');
    assert.equal(normalizePath('/%2E%2E/%2e%2e/etc/passwd'), '/etc/passwd');
    assert.equal(normalizePath('/a/.%2e/b'), '/b');
  });

  test('keeps a double-encoded dot as a literal %25 escape', () => {
    assert.equal(normalizePath('/%252e%252e/x'), '/%252e%252e/x');
  });

  test('encodes characters that may not appear raw: backslash, quotes, bytes >= 0x80', () => {
    assert.equal(normalizePath('/a\\..\\b'), '/a%5C..%5Cb');
    assert.equal(normalizePath('/"<>"'), '/%22%3C%3E%22');
    assert.equal(normalizePath('/caf\u00e9'), '/caf%E9');
    assert.equal(normalizePath('/my dir/a b'), '/my%20dir/a%20b');
  });

  test('refuses NUL, control characters, malformed escapes and paths not starting with /', () => {
    for (const bad of ['/a%00', '/%00/x', '/a\x00b', '/a\x01', '/a\t', '/a\x7f', '/a%zz', '/a%4', '/a%', '/a%%41', 'a/b', '', ' /']) {
      assert.equal(normalizePath(bad), null, JSON.stringify(bad));
    }
  });

  test('leaves an already-canonical path unchanged', () => {
    for (const ok of ['/', '/a', '/a/b/', '/a.b/c-d_e~f', "/;x=1/@:!$&'()*+,="]) assert.equal(normalizePath(ok), ok);
  });

  test('property: normalizing is idempotent', () => {
    fc.assert(
      fc.property(rawPath, (p) => {
        const once = normalizePath(p);
        if (once !== null) assert.equal(normalizePath(once), once);
      }),
      { numRuns: 3000 },
    );
  });

  test('property: a canonical path starts with one /, has no // and no . or .. segment', () => {
    fc.assert(
      fc.property(rawPath, (p) => {
        const out = normalizePath(p);
        if (out === null) return;
        assert.equal(out[0], '/');
        assert.ok(!out.includes('//'), out);
        for (const segment of out.split('/')) assert.ok(segment !== '.' && segment !== '..', out);
        assert.ok(!/[\x00-\x20\x7f-\uffff\\"<>^`{|}]/.test(out), out);
        assert.ok(!/%(?![0-9A-F]{2})/.test(out), `bad escape in ${out}`);
      }),
      { numRuns: 3000 },
    );
  });

  test('property: decoded segments of a canonical path are never dot segments and never hold / \\ or NUL', () => {
    fc.assert(
      fc.property(rawPath, (p) => {
        const out = normalizePath(p);
        if (out === null) return;
        const segments = decodeSegments(out);
        if (segments === null) return;
        for (const s of segments) {
          assert.ok(s !== '' && s !== '.' && s !== '..', JSON.stringify(s));
          assert.ok(!/[/\\\0]/.test(s), JSON.stringify(s));
        }
      }),
      { numRuns: 3000 },
    );
  });

  test('property: arbitrary strings never make it throw', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        const out = normalizePath('/' + s);
        if (out !== null) assert.equal(normalizePath(out), out);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('parseRequestTarget', () => {
  test('splits origin-form into canonical path and raw query', () => {
    assert.deepEqual(parseRequestTarget('/a/../b?x=%2e&y'), { path: '/b', query: 'x=%2e&y', authority: undefined });
    assert.deepEqual(parseRequestTarget('/a'), { path: '/a', query: '', authority: undefined });
  });

  test('drops a fragment from the path and the query', () => {
    assert.deepEqual(parseRequestTarget('/a#frag'), { path: '/a', query: '', authority: undefined });
    assert.deepEqual(parseRequestTarget('/a?q=1#frag'), { path: '/a', query: 'q=1', authority: undefined });
  });

  test('takes the authority of an absolute-form target', () => {
    assert.deepEqual(parseRequestTarget('http://Example.com:8080/x/./y?z'), { path: '/x/y', query: 'z', authority: 'Example.com:8080' });
    assert.deepEqual(parseRequestTarget('HTTPS://h'), { path: '/', query: '', authority: 'h' });
    assert.deepEqual(parseRequestTarget('http://h?q'), { path: '/', query: 'q', authority: 'h' });
  });

  test('refuses absolute-form targets with user-info, an empty authority or another scheme', () => {
    for (const bad of ['http://user@h/', 'http:///x', 'ftp://h/x', 'h/x', 'http://h/%00']) {
      assert.equal(parseRequestTarget(bad), null, bad);
    }
  });

  test('returns the asterisk-form as the path *', () => {
    assert.deepEqual(parseRequestTarget('*'), { path: '*', query: '', authority: undefined });
  });
});

describe('decodeSegments', () => {
  test('decodes UTF-8 escapes into file-system names', () => {
    assert.deepEqual(decodeSegments('/caf%C3%A9/a%20b/'), ['café', 'a b']);
  });

  test('refuses a segment holding an encoded slash, backslash or NUL', () => {
    assert.equal(decodeSegments('/a%2Fb'), null);
    assert.equal(decodeSegments('/a%5Cb'), null);
    assert.equal(decodeSegments('/..%5C..%5Cetc'), null);
  });

  test('does not throw on invalid UTF-8 (overlong %C0%AE) and yields no dot segment', () => {
    const segments = decodeSegments('/%C0%AE%C0%AE/x');
    assert.ok(segments !== null);
    assert.notEqual(segments[0], '..');
  });
});
