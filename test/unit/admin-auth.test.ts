/**
 * The admin API's pure guards and routes: the token compare, the Host check, the CSRF rules, loopback peers,
 * sessions expiring on an injected clock, the route table and server ids however the client escaped them.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { bearerToken, cookieValue, csrfProblem, hostAllowed, isLoopbackPeer, SESSION_MS, Sessions, tokenMatches } from '../../src/control/admin-auth.js';
import { routeAdmin, serverIdOf } from '../../src/control/admin-routes.js';
import { isLoopbackHost } from '../../src/config/admin.js';

describe('admin auth', () => {
  test('tokenMatches: only the exact token; never with no token set or none given', () => {
    assert.equal(tokenMatches('secret', 'secret'), true);
    assert.equal(tokenMatches('secret', 'secreT'), false);
    assert.equal(tokenMatches('secret', 'secret2'), false);
    assert.equal(tokenMatches('secret', ''), false);
    assert.equal(tokenMatches(undefined, 'anything'), false);
    assert.equal(tokenMatches('', ''), false);
    assert.equal(tokenMatches('secret', undefined), false);
  });

  test('bearerToken and cookieValue read their headers', () => {
    assert.equal(bearerToken({ authorization: 'Bearer abc' }), 'abc');
    assert.equal(bearerToken({ authorization: 'bearer abc ' }), 'abc');
    assert.equal(bearerToken({ authorization: 'Basic abc' }), undefined);
    assert.equal(bearerToken({}), undefined);
    assert.equal(cookieValue({ cookie: 'a=1; portico_admin=xyz; b=2' }, 'portico_admin'), 'xyz');
    assert.equal(cookieValue({ cookie: 'xportico_admin=1' }, 'portico_admin'), undefined);
  });

  test('isLoopbackPeer: 127.0.0.0/8, ::1 and their mapped forms only', () => {
    for (const address of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) assert.equal(isLoopbackPeer(address), true, address);
    for (const address of ['10.0.0.1', '::ffff:10.0.0.1', '128.0.0.1', 'fe80::1', undefined]) assert.equal(isLoopbackPeer(address), false, String(address));
    assert.equal(isLoopbackHost('localhost'), true);
    assert.equal(isLoopbackHost('0.0.0.0'), false);
    assert.equal(isLoopbackHost('::'), false);
  });

  test('hostAllowed: the connected address with its port, localhost on loopback, admin.hosts with or without a port', () => {
    const local = { address: '127.0.0.1', port: 9901 };
    assert.equal(hostAllowed('127.0.0.1:9901', local, []), true);
    assert.equal(hostAllowed('localhost:9901', local, []), true);
    assert.equal(hostAllowed('127.0.0.1', local, []), false);
    assert.equal(hostAllowed('127.0.0.1:9902', local, []), false);
    assert.equal(hostAllowed('evil.example:9901', local, []), false);
    assert.equal(hostAllowed(undefined, local, []), false);
    assert.equal(hostAllowed('admin.example', local, ['admin.example']), true);
    assert.equal(hostAllowed('admin.example:9901', local, ['admin.example']), true);
    assert.equal(hostAllowed('admin.example:1', local, ['admin.example:9901']), false);
    assert.equal(hostAllowed('[::1]:9901', { address: '::1', port: 9901 }, []), true);
    assert.equal(hostAllowed('localhost:9901', { address: '10.0.0.5', port: 9901 }, []), false, 'localhost only names a loopback connection');
    assert.equal(hostAllowed('10.0.0.5:9901', { address: '::ffff:10.0.0.5', port: 9901 }, []), true);
  });

  test('csrfProblem: the custom header, a JSON type, and same-origin Origin / Sec-Fetch-Site when sent', () => {
    const origin = 'http://127.0.0.1:9901';
    const good = { 'x-portico-admin': '1', 'content-type': 'application/json; charset=utf-8' };
    assert.equal(csrfProblem(good, origin), undefined);
    assert.equal(csrfProblem({ ...good, origin, 'sec-fetch-site': 'same-origin' }, origin), undefined);
    assert.match(csrfProblem({ 'content-type': 'application/json' }, origin)!, /X-Portico-Admin/);
    assert.match(csrfProblem({ ...good, 'content-type': 'text/plain' }, origin)!, /application\/json/);
    assert.match(csrfProblem({ ...good, origin: 'http://evil.example' }, origin)!, /Origin/);
    assert.match(csrfProblem({ ...good, 'sec-fetch-site': 'cross-site' }, origin)!, /Sec-Fetch-Site/);
    assert.match(csrfProblem({ ...good, 'sec-fetch-site': 'none' }, origin)!, /Sec-Fetch-Site/);
  });

  test('Sessions: a session lives 8 hours on the clock, ends at logout, and all end at clear', () => {
    let now = 1_000_000;
    const sessions = new Sessions(() => now);
    const id = sessions.open();
    assert.match(id, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(sessions.valid(id), true);
    now += SESSION_MS - 1;
    assert.equal(sessions.valid(id), true);
    now += 1;
    assert.equal(sessions.valid(id), false);
    assert.equal(sessions.size, 0, 'an expired session is forgotten');
    const other = sessions.open();
    sessions.close(other);
    assert.equal(sessions.valid(other), false);
    const third = sessions.open();
    sessions.clear();
    assert.equal(sessions.valid(third), false);
    assert.equal(sessions.valid(undefined), false);
  });
});

describe('admin routes', () => {
  test('routeAdmin: each route with its method; 405 with Allow for another method, 404 for no route', () => {
    assert.deepEqual(routeAdmin('GET', '/status'), { route: { kind: 'status' }, method: 'GET' });
    assert.deepEqual(routeAdmin('HEAD', '/healthz'), { route: { kind: 'healthz' }, method: 'GET' });
    assert.deepEqual(routeAdmin('POST', '/upstreams/app/servers/blue/weight'), { route: { kind: 'server', upstream: 'app', server: 'blue', action: 'weight' }, method: 'POST' });
    assert.deepEqual(routeAdmin('POST', '/upstreams/app/deploy'), { route: { kind: 'deploy', upstream: 'app' }, method: 'POST' });
    assert.deepEqual(routeAdmin('POST', '/caches/main/purge'), { route: { kind: 'purge', zone: 'main' }, method: 'POST' });
    assert.deepEqual(routeAdmin('GET', '/jobs/abc-1/events'), { route: { kind: 'job-events', id: 'abc-1' }, method: 'GET' });
    assert.deepEqual(routeAdmin('GET', '/assets/app.js'), { route: { kind: 'dashboard' }, method: 'GET' });
    assert.equal((routeAdmin('OPTIONS', '/reload') as { status: number }).status, 405);
    assert.equal((routeAdmin('GET', '/reload') as { allow: string }).allow, 'POST');
    assert.equal((routeAdmin('POST', '/upstreams/app/servers/blue/explode') as { status: number }).status, 404);
    assert.equal((routeAdmin('POST', '/upstreams/a b/deploy') as { status: number }).status, 404);
    assert.equal((routeAdmin('GET', '/status/') as { status: number }).status, 404);
  });

  test('serverIdOf: a name as is, a slot percent-decoded, an address id as /status shows it however escaped', () => {
    assert.equal(serverIdOf('blue'), 'blue');
    assert.equal(serverIdOf('app%231'), 'app#1');
    assert.equal(serverIdOf('http%3A%2F%2F127.0.0.1%3A3001'), 'http%3A%2F%2F127.0.0.1%3A3001');
    assert.equal(serverIdOf('http%253A%252F%252F127.0.0.1%253A3001'), 'http%3A%2F%2F127.0.0.1%3A3001');
    assert.equal(serverIdOf('http:%2F%2F127.0.0.1:3001'), 'http%3A%2F%2F127.0.0.1%3A3001');
    assert.equal(serverIdOf('%E0%A4%A'), undefined);
    assert.equal(serverIdOf(''), undefined);
  });
});
