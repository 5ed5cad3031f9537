import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { canonicalAuthority, checkHostPattern, HostMatcher, normalizeHostPattern, parseHostHeader } from '../../src/http/hosts.js';

describe('parseHostHeader', () => {
  test('lower-cases the host and drops the port', () => {
    assert.equal(parseHostHeader('Example.COM'), 'example.com');
    assert.equal(parseHostHeader('example.com:8080'), 'example.com');
    assert.equal(parseHostHeader('EXAMPLE.com.:80'), 'example.com');
  });

  test('keeps an IPv6 literal in brackets and drops its port', () => {
    assert.equal(parseHostHeader('[::1]:8080'), '[::1]');
    assert.equal(parseHostHeader('[::1]'), '[::1]');
    assert.equal(parseHostHeader('[2001:DB8::1]'), '[2001:db8::1]');
  });

  test('refuses joined duplicates, user-info, bad ports and broken IPv6 literals', () => {
    for (const bad of ['a.com, b.com', 'a.com,a.com', 'user@a.com', 'a.com:80:80', 'a.com:http', 'a.com:123456', '[::1', '[::1]x', '[zz::1]', 'a b', 'a/b']) {
      assert.equal(parseHostHeader(bad), null, bad);
    }
  });
});

describe('host patterns', () => {
  test('normalizes case, trailing dots and bare IPv6', () => {
    assert.equal(normalizeHostPattern(' Example.COM. '), 'example.com');
    assert.equal(normalizeHostPattern('::1'), '[::1]');
    assert.equal(normalizeHostPattern('[::1]'), '[::1]');
  });

  test('accepts names, leading wildcards and IPv6; refuses other wildcards and junk', () => {
    for (const ok of ['example.com', '*.example.com', '::1', '[::1]', 'localhost', '127.0.0.1']) assert.equal(checkHostPattern(ok), undefined, ok);
    for (const bad of ['*', '*.', 'a.*.com', '*example.com', 'ex ample.com', '[zz]', 'a/b']) assert.notEqual(checkHostPattern(bad), undefined, bad);
  });
});

test('a host pattern with a port is refused with a message about the port, not about IPv6', () => {
  assert.match(checkHostPattern('localhost:8080') ?? '', /no port/);
  assert.match(checkHostPattern('example.com:') ?? '', /no port/);
  assert.equal(checkHostPattern('::1'), undefined);
  assert.equal(checkHostPattern('2001:db8::1'), undefined);
});

describe('HostMatcher', () => {
  function matcher(): HostMatcher<string> {
    const m = new HostMatcher<string>();
    m.add(['*.example.com'], 'wild');
    m.add(['*.api.example.com'], 'api-wild');
    m.add(['www.example.com', 'Example.COM'], 'exact');
    m.add(['::1'], 'v6');
    return m;
  }

  test('*.example.com matches a.example.com and a.b.example.com but not example.com', () => {
    const m = new HostMatcher<string>();
    m.add(['*.example.com'], 'wild');
    assert.equal(m.match('a.example.com'), 'wild');
    assert.equal(m.match('a.b.example.com'), 'wild');
    assert.equal(m.match('example.com'), undefined);
    assert.equal(m.match('badexample.com'), undefined);
    assert.equal(m.match('.example.com'), undefined);
  });

  test("with wildcards: 'one-label' (certificates, RFC 6125 §6.4.3), *.example.com matches a.example.com only; a deeper wildcard still wins", () => {
    const m = new HostMatcher<string>({ wildcards: 'one-label' });
    m.add(['*.example.com'], 'wild');
    m.add(['*.api.example.com'], 'api-wild');
    assert.equal(m.match('a.example.com'), 'wild');
    assert.equal(m.match('api.example.com'), 'wild');
    assert.equal(m.match('a.b.example.com'), undefined);
    assert.equal(m.match('x.api.example.com'), 'api-wild');
    assert.equal(m.match('y.x.api.example.com'), undefined);
    assert.equal(m.match('example.com'), undefined);
    m.add(undefined, 'default');
    assert.equal(m.match('a.b.example.com'), 'default');
  });

  test('an exact name wins over a wildcard, and the longest wildcard wins', () => {
    const m = matcher();
    assert.equal(m.match('www.example.com'), 'exact');
    assert.equal(m.match('example.com'), 'exact');
    assert.equal(m.match('x.api.example.com'), 'api-wild');
    assert.equal(m.match('api.example.com'), 'wild');
  });

  test('matches a parsed Host header case-insensitively, port ignored, IPv6 included', () => {
    const m = matcher();
    assert.equal(m.match(parseHostHeader('WWW.Example.Com:8443')!), 'exact');
    assert.equal(m.match(parseHostHeader('[::1]:8080')!), 'v6');
  });

  test('no match and no default gives undefined; the first default site wins', () => {
    const m = matcher();
    assert.equal(m.match('other.org'), undefined);
    m.add(undefined, 'default');
    m.add(undefined, 'second-default');
    assert.equal(m.match('other.org'), 'default');
    assert.equal(m.match(''), 'default');
  });

  test('the first site listing a name keeps it', () => {
    const m = new HostMatcher<string>();
    m.add(['a.com'], 'first');
    m.add(['A.com'], 'second');
    assert.equal(m.match('a.com'), 'first');
  });

  test('property: *.suffix matches exactly the hosts with at least one more label', () => {
    const label = fc.stringMatching(/^[a-z0-9]{1,8}$/);
    fc.assert(
      fc.property(fc.array(label, { minLength: 1, maxLength: 3 }), fc.array(label, { maxLength: 3 }), fc.boolean(), (suffix, prefix, withBase) => {
        const m = new HostMatcher<boolean>();
        const base = suffix.join('.');
        m.add([`*.${base}`], true);
        const name = [...prefix, ...(withBase ? suffix : [])].join('.');
        const expected = name.endsWith(`.${base}`);
        if (withBase) assert.equal(expected, prefix.length > 0);
        assert.equal(m.match(name) === true, expected, `${name} vs *.${base}`);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('canonicalAuthority', () => {
  const canonical = (raw: string, scheme = 'http') => canonicalAuthority(parseHostHeader(raw)!, raw, scheme);

  test('one form per site: case, trailing dot, an empty or default port and leading zeros make no difference', () => {
    for (const raw of ['good.example', 'GOOD.EXAMPLE', 'good.example.', 'good.example:80', 'good.example:', 'Good.Example:0080']) {
      assert.equal(canonical(raw), 'good.example', raw);
    }
    assert.equal(canonical('good.example:443', 'https'), 'good.example');
  });

  test('a port that is not the scheme default is kept, as a number', () => {
    assert.equal(canonical('Good.Example:06666'), 'good.example:6666');
    assert.equal(canonical('good.example:443'), 'good.example:443');
    assert.equal(canonical('good.example:80', 'https'), 'good.example:80');
    assert.equal(canonical('[::1]:8080'), '[::1]:8080');
    assert.equal(canonical('[::1]:80'), '[::1]');
    assert.equal(canonical('[::1]'), '[::1]');
  });
});
