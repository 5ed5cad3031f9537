import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { loadConfigFile, parseConfig, type Config } from '../../src/server/config.js';
import { parseDuration, parseSize } from '../../src/config/units.js';
import { ConfigError } from '../../src/errors.js';
import { configErrors } from '../helpers/config.js';
import { makeTree } from '../helpers/portico.js';
import { staticKind } from '../../src/handlers/static/handler.js';
import { optionsOf } from '../../src/handlers/types.js';

const dir = makeTree({ 'pub/index.html': 'hi', 'errors/404.html': 'gone' });
after(() => rmSync(dir, { recursive: true, force: true }));

function parse(text: string): Config {
  return parseConfig(text, 'portico.yaml', dir);
}

/** Every issue of an invalid config, formatted as `portico check` prints them. */
function errorsOf(text: string): string[] {
  return configErrors(text, dir);
}

describe('config errors', () => {
  test('servers of one upstream need ids of their own: the same URL twice, or a name twice, is an error at file:line:col; a name tells two of one URL apart', () => {
    const upstream = (servers: string) => ['listen: ["127.0.0.1:0"]', 'upstreams:', '  app:', `    servers: ${servers}`, 'sites:', '  - routes: [{ path: /, proxy: { upstream: app } }]'].join('\n');
    const same = errorsOf(upstream('["http://127.0.0.1:3001", "http://127.0.0.1:3001"]'));
    assert.equal(same.length, 1, same.join('\n'));
    assert.match(same[0]!, /^portico\.yaml:4:\d+ upstreams\.app\.servers\[1\]: servers\[0\] has the same URL http:\/\/127\.0\.0\.1:3001: .*give one of them a name/);
    const named = errorsOf(upstream('[{ url: "http://127.0.0.1:3001", name: a }, { url: "http://127.0.0.1:3002", name: a }]'));
    assert.match(named.join('\n'), /servers\[1\]\.name: name "a" already names servers\[0\]/);
    const apart = parse(upstream('[{ url: "http://127.0.0.1:3001", name: a }, "http://127.0.0.1:3001"]'));
    assert.equal(apart.upstreams.app?.servers.length, 2);
  });

  test('compress: a bad level on a site and a bad media type on a route are reported at file:line:col with their key paths', () => {
    const issues = errorsOf(
      [
        'listen: ["127.0.0.1:0"]',
        'sites:',
        '  - compress: { brotli_quality: 12 }',
        '    routes:',
        '      - path: /',
        '        compress: { types: [json] }',
        '        respond: { body: ok }',
      ].join('\n'),
    );
    assert.equal(issues.length, 2, issues.join('\n'));
    assert.match(issues.find((line) => line.includes('brotli_quality'))!, /^portico\.yaml:3:\d+ sites\[0\]\.compress\.brotli_quality: /);
    assert.match(issues.find((line) => line.includes('types'))!, /^portico\.yaml:6:\d+ sites\[0\]\.routes\[0\]\.compress\.types\[0\]: a media type/);
  });

  test('a missing static root is reported at file:line:col with its key path', () => {
    const text = [
      'listen: ["127.0.0.1:0"]',
      'sites:',
      '  - routes:',
      '      - path: /health',
      '        respond: { body: ok }',
      '      - path: /',
      '        static:',
      '          root: ./pub-missing',
    ].join('\n');
    assert.deepEqual(errorsOf(text), ['portico.yaml:8:17 sites[0].routes[1].static.root: directory ./pub-missing does not exist']);
  });

  test('unknown keys are rejected at every level, located at the key', () => {
    const text = ['colour: red', 'sites:', '  - routes:', '      - path: /', '        static: { root: ./pub, rot: 1 }', '    hots: [a.com]'].join('\n');
    assert.deepEqual(errorsOf(text).sort(), [
      'portico.yaml:1:1 colour: unknown key',
      'portico.yaml:5:32 sites[0].routes[0].static.rot: unknown key (did you mean "root"?)',
      'portico.yaml:6:5 sites[0].hots: unknown key (did you mean "hosts"?)',
    ]);
  });

  test('every problem is reported at once, not just the first, in file order', () => {
    const text = [
      'listen: ["127.0.0.1:99999"]',
      'log: { level: loud }',
      'sites:',
      '  - routes:',
      '      - path: nope',
      '        respond: {}',
      '      - path: /x',
    ].join('\n');
    const errors = errorsOf(text);
    assert.equal(errors.length, 4, errors.join('\n'));
    assert.match(errors[0]!, /^portico\.yaml:1:10 listen\[0\]: expected "host:port"/);
    assert.match(errors[1]!, /^portico\.yaml:2:15 log\.level: /);
    assert.match(errors[2]!, /^portico\.yaml:5:15 sites\[0\]\.routes\[0\]\.path: a route path must start with "\/"/);
    assert.match(errors[3]!, /^portico\.yaml:7:9 sites\[0\]\.routes\[1\]: a route needs one handler/);
  });

  test('an upstream server may be its URL alone; a URL without a scheme is an error at that entry saying what to write', () => {
    const config = parse('upstreams: { app: { servers: ["http://127.0.0.1:3001", { url: "http://127.0.0.1:3002", weight: 2 }] } }\nsites: [{ routes: [{ path: /, proxy: { upstream: app } }] }]\n');
    const servers = config.upstreams.app!.servers;
    assert.deepEqual(servers.map((s) => [s.url.origin, s.weight, s.backup]), [['http://127.0.0.1:3001', 1, false], ['http://127.0.0.1:3002', 2, false]]);
    const issues = errorsOf('upstreams: { app: { servers: ["127.0.0.1:3001"] } }\nsites: [{ routes: [{ path: /, proxy: { upstream: app } }] }]\n');
    assert.deepEqual(issues, ['portico.yaml:1:31 upstreams.app.servers[0]: a server URL needs its scheme: write "http://127.0.0.1:3001" (or https://), got "127.0.0.1:3001"']);
  });

  test('a server written host:port without a scheme says to add http://, also for localhost:3001 (which a URL parser reads as the scheme "localhost")', () => {
    const issues = errorsOf('upstreams: { app: { servers: ["localhost:3001"] } }\nsites: [{ routes: [{ path: /, proxy: { upstream: app } }, { path: /b, proxy: { url: "app.internal:80/v1" } }] }]\n');
    assert.deepEqual(issues, [
      'portico.yaml:1:31 upstreams.app.servers[0]: a server URL needs its scheme: write "http://localhost:3001" (or https://), got "localhost:3001"',
      'portico.yaml:2:85 sites[0].routes[1].proxy.url: a server URL needs its scheme: write "http://app.internal:80/v1" (or https://), got "app.internal:80/v1"',
    ]);
  });

  test('a bad field of an object-form listener is reported at its own key', () => {
    assert.deepEqual(errorsOf('listen: [{ addr: "nowhere", bogus: 1 }]\nsites: [{}]').sort(), [
      'portico.yaml:1:18 listen[0].addr: expected "host:port", ":port" or "[::1]:port", got "nowhere"',
      'portico.yaml:1:29 listen[0].bogus: unknown key',
    ]);
  });

  test('a value of the wrong type names the types expected', () => {
    const errors = errorsOf('sites:\n  - routes:\n      - path: /\n        static: { root: ./pub, file_cache: { valid: true } }');
    assert.deepEqual(errors, ['portico.yaml:4:53 sites[0].routes[0].static.file_cache.valid: expected a string or a number, got true']);
  });

  test('a bad record key says what a key must be (not zod\'s "Invalid key in record"), on its line', () => {
    const errors = errorsOf('sites:\n  - error_pages:\n      404: ./errors/404.html\n      200: ./errors/404.html\n    routes: []');
    // On the key's line, at its value as for other keys (YAML reads `200:` as a number; the key path has it as text).
    assert.deepEqual(errors, ['portico.yaml:4:12 sites[0].error_pages.200: expected a 4xx or 5xx status']);
  });

  test('a missing required key says "required"', () => {
    assert.deepEqual(errorsOf('listen: [":0"]'), ['portico.yaml:1:1 sites: required (a list)']);
  });

  test('YAML syntax errors and duplicate keys are located where they are, not at 1:1', () => {
    assert.equal(errorsOf('sites: []\nsites: []')[0]?.slice(0, 17), 'portico.yaml:2:1 ');
    const syntax = errorsOf('listen: [":0"]\nsites:\n  - routes:\n    - path: /\n     bad: x\n');
    assert.match(syntax[0]!, /^portico\.yaml:5:\d+ /);
  });

  test('one line of a site indented wrong is reported once, at that line and its first character, with the indentations that would fit', () => {
    const shallow = ['listen: [":0"]', 'sites:', '  - hosts: [example.com]', '    routes:', '      - path: /', '        static: ./pub', '     - path: /x', '        respond: { body: hi }'];
    assert.deepEqual(errorsOf(shallow.join('\n')), ['portico.yaml:7:6 bad indentation: this line is indented 5 spaces, where the blocks above it are at 4 or 6']);
    // Indented too far under a line that opens no block: the parser's error is on the line above, the report is not.
    const deep = ['sites:', '  - routes:', '      - path: /', '          static: ./pub', '      - path: /b', '        respond: {}'];
    assert.deepEqual(errorsOf(deep.join('\n')), ['portico.yaml:4:11 bad indentation: this line is indented 10 spaces, where the blocks above it are at 8']);
    assert.deepEqual(errorsOf('sites:\n  - hosts: [example.com]\n   routes: []\n'), ['portico.yaml:3:4 bad indentation: this line is indented 3 spaces, where the blocks above it are at 2 or 4']);
  });

  test('other YAML syntax errors are reported once, the first, in the parser\'s words', () => {
    assert.deepEqual(errorsOf('a: "x\nb: 1\n'), ['portico.yaml:3:1 Missing closing "quote']);
  });

  test('a key written twice names the key and the line of its first occurrence, at the second', () => {
    assert.deepEqual(errorsOf('sites:\n  - routes: []\nlisten: [":0"]\n\nsites:\n  - routes: []\n'), [
      'portico.yaml:5:1 duplicate key "sites" (first at line 1): keep one of them, or merge what they hold',
    ]);
    assert.deepEqual(errorsOf('sites:\n  - routes:\n      - path: /\n        respond: {}\n        path: /x\n'), [
      'portico.yaml:5:9 duplicate key "path" (first at line 3): keep one of them, or merge what they hold',
    ]);
  });

  test('a tab in the indentation is reported at the tab, saying that YAML indents with spaces, even when the parser trips on the line above first', () => {
    const expected = 'a tab in the indentation: YAML indents with spaces only';
    assert.deepEqual(errorsOf('listen: [":0"]\nsites:\n\t- routes: []\n'), [`portico.yaml:3:1 ${expected}`]);
    assert.deepEqual(errorsOf('sites:\n  - routes:\n\t- path: /\n'), [`portico.yaml:3:1 ${expected}`]);
  });

  test('semantic problems: a second default site, a bad host pattern, a bad try_files entry, a missing error page', () => {
    const text = [
      'sites:',
      '  - routes: [{ path: /, static: { root: ./pub, try_files: ["$uri", "index.html"] } }]',
      '    error_pages: { 404: ./errors/nope.html }',
      '  - hosts: ["a.*.com"]',
      '  - routes: []',
    ].join('\n');
    const errors = errorsOf(text);
    assert.ok(errors.some((e) => /sites\[0\]\.routes\[0\]\.static\.try_files\[1\]: expected "\$uri"/.test(e)), errors.join('\n'));
    assert.ok(errors.some((e) => /sites\[0\]\.error_pages\.404: file \.\/errors\/nope\.html does not exist/.test(e)), errors.join('\n'));
    assert.ok(errors.includes('portico.yaml:4:13 sites[1].hosts[0]: a wildcard is allowed only as a leading "*." label (got "a.*.com")'), errors.join('\n'));
    assert.ok(errors.some((e) => /sites\[2\]: a second site without "hosts"/.test(e)), errors.join('\n'));
  });

  test('a host written as a URL, with a port or a path, several in one entry, or as "*" or "*." says what to write instead', () => {
    const hosts = ['http://example.com', 'https://Example.com:8443/x', 'example.com:8080', 'example.com/', 'a.com b.com', '*', '*.', '[zz]'];
    const errors = errorsOf(`sites:\n  - hosts: ${JSON.stringify(hosts)}\n    routes: []\n`).map((line) => line.replace(/^portico\.yaml:2:\d+ sites\[0\]\.hosts\[\d\]: /, ''));
    assert.deepEqual(errors, [
      'expected a host name, not a URL: write "example.com" (got "http://example.com")',
      'expected a host name, not a URL: write "example.com" (got "https://Example.com:8443/x")',
      'a host has no port here (every port of the listeners is served): write "example.com" (got "example.com:8080")',
      'expected a host name, without a path: write "example.com" (got "example.com/")',
      'a host name has no spaces or commas: list each host as an entry of its own (got "a.com b.com")',
      '"*" is not a host pattern: a site without "hosts" answers every host (got "*")',
      'a wildcard needs a domain after "*.", such as "*.example.com" (got "*.")',
      'not a valid host name or IPv6 address (got "[zz]")',
    ]);
  });

  test('duplicate route paths and listeners are refused', () => {
    const errors = errorsOf(
      'listen: ["127.0.0.1:8080", "127.0.0.1:8080"]\nsites:\n  - routes:\n      - { path: /a, respond: {} }\n      - { path: /a, respond: {} }',
    );
    assert.ok(errors.some((e) => /listen\[1\]: address 127\.0\.0\.1:8080 is already listed/.test(e)), errors.join('\n'));
    assert.ok(errors.some((e) => /sites\[0\]\.routes\[1\]\.path: duplicate route path/.test(e)), errors.join('\n'));
  });

  test('an unknown key suggests the nearest known one: proxy.pass → "upstream" or "url" (nginx\'s proxy_pass), a misspelling its spelling', () => {
    const text = [
      'upstreams: { app: { servers: ["http://127.0.0.1:9"] } }',
      'sites:',
      '  - routes:',
      '      - path: /api/',
      '        proxy: { pass: app }',
      '      - path: /',
      '        proxy: { upstream: app, stripPrefix: true, colour: red }',
    ].join('\n');
    assert.deepEqual(errorsOf(text), [
      'portico.yaml:5:18 sites[0].routes[0].proxy.pass: unknown key (did you mean "upstream" or "url"?)',
      'portico.yaml:7:33 sites[0].routes[1].proxy.stripPrefix: unknown key (did you mean "strip_prefix"?)',
      'portico.yaml:7:52 sites[0].routes[1].proxy.colour: unknown key',
    ]);
  });

  test('zod\'s own wording ("Invalid input", "Too small", "Invalid option", "received") never reaches the user: each message says what to write and what was written', () => {
    const text = [
      'listen: [{ addr: "127.0.0.1:0", max_header_count: 0, redirect_https: 70000 }]',
      'log: { format: jsn }',
      'upstreams:',
      '  app:',
      '    servers: [{ url: "http://127.0.0.1:1", weight: 0 }]',
      '    health: { path: health }',
      '    retries: 1.5',
      'sites:',
      '  - hosts: [""]',
      '    routes:',
      '      - path: /',
      '        static: { root: ./pub, autoindex: "yes", index: index.html }',
      '      - path: /b',
      '        proxy: app',
      '      - path: /c',
      '        redirect: { to: "https://example.com/", status: 200 }',
    ].join('\n');
    const errors = errorsOf(text);
    assert.deepEqual(errors, [
      'portico.yaml:1:51 listen[0].max_header_count: must be at least 1 (got 0)',
      'portico.yaml:1:70 listen[0].redirect_https: must be at most 65535 (got 70000)',
      'portico.yaml:2:16 log.format: expected one of combined, upstream, json, off (got "jsn") (did you mean "json"?)',
      'portico.yaml:5:52 upstreams.app.servers[0].weight: must be at least 1 (got 0)',
      'portico.yaml:6:21 upstreams.app.health.path: path must start with "/" (got "health")',
      'portico.yaml:7:14 upstreams.app.retries: expected a whole number, got 1.5',
      'portico.yaml:9:13 sites[0].hosts[0]: must not be empty',
      'portico.yaml:12:43 sites[0].routes[0].static.autoindex: expected true or false, got "yes"',
      'portico.yaml:12:57 sites[0].routes[0].static.index: expected a list, got "index.html"',
      'portico.yaml:14:16 sites[0].routes[1].proxy: expected a map of keys, got "app"',
      'portico.yaml:16:57 sites[0].routes[2].redirect.status: expected one of 301, 302, 303, 307, 308 (got 200)',
    ]);
  });

  test('a key with nothing after it, its lines not indented under it, says so', () => {
    const errors = errorsOf('sites:\n  - routes:\n      - path: /\n        static:\n        root: ./pub');
    assert.equal(errors[0], 'portico.yaml:4:16 sites[0].routes[0].static: expected a map of keys, got nothing (what belongs to a key goes on the lines below it, indented further)');
  });

  test('keys below an empty key at its indentation are asked whether they belong under it, not told to rename themselves', () => {
    const errors = errorsOf('sites:\n  - routes:\n      - path: /\n        static:\n        root: ./pub\n        index: [index.html]\n      - path: /b\n        respond: {}\n        root: x\n');
    assert.deepEqual(errors.slice(1), [
      'portico.yaml:5:9 sites[0].routes[0].root: unknown key here; did you mean to indent it under "static"?',
      'portico.yaml:6:9 sites[0].routes[0].index: unknown key here; did you mean to indent it under "static"?',
      'portico.yaml:9:9 sites[0].routes[1].root: unknown key (did you mean "static"?)',
    ]);
  });

  test('an upstream\'s key written on a proxy (timeouts, policy, or a near miss) says it is set on the upstream; a swapped pair of letters still gets its suggestion', () => {
    const errors = errorsOf('upstreams: { app: { servers: ["http://127.0.0.1:9"] } }\nsites:\n  - routes:\n      - path: /\n        proxy: { upstream: app, timout: 5s, timeouts: {}, stirp_prefix: true }\n');
    assert.deepEqual(errors, [
      'portico.yaml:5:33 sites[0].routes[0].proxy.timout: unknown key here (did you mean "timeouts"? It is set on an upstream: upstreams.NAME.timeouts, which a proxy names with "upstream: NAME")',
      'portico.yaml:5:45 sites[0].routes[0].proxy.timeouts: unknown key here ("timeouts" is set on an upstream: upstreams.NAME.timeouts, which a proxy names with "upstream: NAME")',
      'portico.yaml:5:59 sites[0].routes[0].proxy.stirp_prefix: unknown key (did you mean "strip_prefix"?)',
    ]);
  });

  test('a listener written as a bare port (a number or "8080") is refused with the two addresses it may mean', () => {
    assert.deepEqual(errorsOf('listen: [8080, "8081", { addr: 8082 }]\nsites: [{}]\n'), [
      'portico.yaml:1:10 listen[0]: expected an address in quotes: "127.0.0.1:8080" (this machine only) or ":8080" (all IPv4 interfaces), got 8080',
      'portico.yaml:1:16 listen[1]: expected an address in quotes: "127.0.0.1:8081" (this machine only) or ":8081" (all IPv4 interfaces), got 8081',
      'portico.yaml:1:32 listen[2].addr: expected an address in quotes: "127.0.0.1:8082" (this machine only) or ":8082" (all IPv4 interfaces), got 8082',
    ]);
    assert.match(errorsOf('listen: [true]\nsites: [{}]\n')[0]!, /listen\[0\]: expected a string or a map of keys, got true$/);
  });

  test('a rate without its unit is refused, saying which units there are (as nginx requires r/s or r/m)', () => {
    assert.deepEqual(errorsOf('sites:\n  - routes:\n      - path: /\n        respond: {}\n        rate_limit: { rate: 10 }\n'), [
      'portico.yaml:5:29 sites[0].routes[0].rate_limit.rate: a rate needs its unit: write "10/s", "10/m" or "10/h" (got 10)',
    ]);
    assert.equal(parse('sites:\n  - routes:\n      - path: /\n        respond: {}\n        rate_limit: { rate: 10/m }\n').sites[0]!.routes.length, 1);
  });

  test('a proxy naming a list of upstreams, or a cache by its zone name or as true, says what to write', () => {
    const errors = errorsOf(
      'caches: { main: { memory: 1MB } }\nupstreams: { a: { servers: ["http://127.0.0.1:9"] } }\nsites:\n  - routes:\n      - { path: /, proxy: { upstream: [a, b] } }\n      - { path: /b, proxy: { upstream: a, cache: main } }\n      - { path: /c, proxy: { upstream: a, cache: true } }\n',
    );
    assert.deepEqual(errors, [
      'portico.yaml:5:39 sites[0].routes[0].proxy.upstream: expected the name of one upstream, got a list (list the servers in that upstream\'s "servers")',
      'portico.yaml:6:50 sites[0].routes[1].proxy.cache: expected a map of keys: write cache: { zone: "main" }, naming a zone of "caches" (got "main")',
      'portico.yaml:7:50 sites[0].routes[2].proxy.cache: expected a map of keys: write cache: { zone: NAME }, naming a zone of "caches" (got true)',
    ]);
  });

  test('static: ./www is the shorthand of static: { root: ./www }, and its root is checked as the long form\'s', () => {
    const config = parse('sites:\n  - routes:\n      - path: /\n        static: ./pub');
    const stat = optionsOf(staticKind, config.sites[0]!.routes[0]!);
    assert.equal(stat.root, path.join(dir, 'pub'));
    assert.deepEqual(stat.index, ['index.html']);
    assert.deepEqual(errorsOf('sites:\n  - routes:\n      - path: /\n        static: ./nothere'), [
      'portico.yaml:4:17 sites[0].routes[0].static.root: directory ./nothere does not exist',
    ]);
  });

  test('an invalid regular expression in a route path is refused', () => {
    assert.match(errorsOf('sites:\n  - routes:\n      - { path: "~ (", respond: {} }')[0]!, /sites\[0\]\.routes\[0\]\.path: invalid regular expression/);
  });
});

describe('config values', () => {
  test('durations: 200ms, 2s, 1m, 1h, 1w, 1y (365 days, for hsts max_age), and a bare number as seconds', () => {
    assert.equal(parseDuration('200ms'), 200);
    assert.equal(parseDuration('2s'), 2000);
    assert.equal(parseDuration('1.5s'), 1500);
    assert.equal(parseDuration('1m'), 60_000);
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseDuration(30), 30_000);
    assert.equal(parseDuration('30'), 30_000);
    assert.equal(parseDuration('1w'), 7 * 86_400_000);
    assert.equal(parseDuration('1y'), 365 * 86_400_000);
    for (const bad of ['fast', '-1s', '2 weeks', '', '1yr']) assert.equal(parseDuration(bad), undefined, bad);
  });

  test('sizes: 512KB, 10MB, 1GB in powers of 1024, a bare number as bytes', () => {
    assert.equal(parseSize('512KB'), 512 * 1024);
    assert.equal(parseSize('10MB'), 10 * 1024 * 1024);
    assert.equal(parseSize('1g'), 1024 ** 3);
    assert.equal(parseSize(4096), 4096);
    assert.equal(parseSize('100'), 100);
    for (const bad of ['big', '10 parsecs', '-1KB', '']) assert.equal(parseSize(bad), undefined, bad);
    assert.equal(parseSize(1.5), undefined);
  });

  test('durations and sizes in the config become milliseconds and bytes', () => {
    const config = parse(
      [
        'listen: [{ addr: "127.0.0.1:0", header_timeout: 5s, keepalive_timeout: 500ms, max_header_size: 8KB }]',
        'sites:',
        '  - routes:',
        '      - path: /',
        '        static: { root: ./pub, file_cache: { valid: 200ms, max_file_size: 2MB } }',
      ].join('\n'),
    );
    assert.equal(config.listen[0]!.header_timeout, 5000);
    assert.equal(config.listen[0]!.keepalive_timeout, 500);
    assert.equal(config.listen[0]!.max_header_size, 8192);
    const stat = optionsOf(staticKind, config.sites[0]!.routes[0]!);
    assert.equal(stat.file_cache.valid, 200);
    assert.equal(stat.file_cache.max_file_size, 2 * 1024 * 1024);
  });

  test('a bad duration or size is refused with the value shown', () => {
    const errors = errorsOf('sites:\n  - routes:\n      - path: /\n        static: { root: ./pub, file_cache: { valid: soon, max_size: lots } }');
    assert.deepEqual(errors.sort(), [
      'portico.yaml:4:53 sites[0].routes[0].static.file_cache.valid: expected a duration such as "2s", "500ms" or "1m", got "soon"',
      'portico.yaml:4:69 sites[0].routes[0].static.file_cache.max_size: expected a size such as "512KB" or "10MB", got "lots"',
    ]);
  });

  test('defaults are filled in, relative paths resolved against the config folder, and the result frozen', () => {
    const config = parse('sites:\n  - routes:\n      - { path: /, static: { root: ./pub } }');
    assert.deepEqual(config.listen.map((l) => l.addr.text), ['127.0.0.1:8080']);
    const stat = optionsOf(staticKind, config.sites[0]!.routes[0]!);
    assert.equal(stat.root, path.join(dir, 'pub'));
    assert.deepEqual(stat.index, ['index.html']);
    assert.equal(stat.dotfiles, 'deny');
    assert.equal(stat.file_cache.valid, 1000);
    assert.ok(Object.isFrozen(config) && Object.isFrozen(stat) && Object.isFrozen(stat.index));
    assert.throws(() => {
      (stat as { root: string }).root = '/';
    });
  });

  test('listener addresses: host:port, :port and [v6]:port', () => {
    const config = parse('listen: ["127.0.0.1:0", ":0", "[::1]:0"]\nsites: [{}]');
    assert.deepEqual(
      config.listen.map((l) => [l.addr.host, l.addr.port]),
      [
        ['127.0.0.1', 0],
        ['0.0.0.0', 0],
        ['::1', 0],
      ],
    );
  });

  test('route paths are parsed once: exact, ^~, regex, ~* and prefix', () => {
    const config = parse(
      'sites:\n  - routes:\n' +
        ['= /x', '^~ /static/', '~ \\.php$', '~* \\.JPG$', '/'].map((p) => `      - { path: '${p}', respond: {} }`).join('\n'),
    );
    const paths = config.sites[0]!.routes.map((r) => r.path);
    assert.deepEqual(
      paths.map((p) => p.kind),
      ['exact', 'prefix', 'regex', 'regex', 'prefix'],
    );
    assert.equal(paths[1]!.kind === 'prefix' && paths[1]!.stopRegex, true);
    assert.equal(paths[3]!.kind === 'regex' && paths[3]!.regex.test('/A.jpg'), true);
  });
});

describe('route paths', () => {
  test('route paths are stored in the canonical form requests arrive in, so that they can match', () => {
    const config = parse(
      'sites:\n  - routes:\n' +
        ['/café/', '= /%7euser', '//a//b/', '/x/../y/', '/a/.', '/img', '/my docs/'].map((p) => `      - { path: '${p}', respond: {} }`).join('\n'),
    );
    const paths = config.sites[0]!.routes.map((r) => (r.path.kind === 'regex' ? '' : r.path.path));
    assert.deepEqual(paths, ['/caf%C3%A9/', '/~user', '/a/b/', '/y/', '/a/.', '/img', '/my%20docs/']);
  });

  test('a route path no request can carry is refused, and paths equal once canonical are duplicates', () => {
    const errors = errorsOf('sites:\n  - routes:\n      - { path: "/a%zz", respond: {} }\n      - { path: /b/, respond: {} }\n      - { path: //b/, respond: {} }');
    assert.deepEqual(errors, [
      'portico.yaml:3:17 sites[0].routes[0].path: no request path can match this (a NUL, a control character or a broken % escape)',
      'portico.yaml:5:17 sites[0].routes[2].path: duplicate route path, first defined at routes[1]',
    ]);
  });
});

describe('config files', () => {
  test('a JSON config is accepted', () => {
    const file = path.join(dir, 'portico.json');
    writeFileSync(file, JSON.stringify({ listen: ['127.0.0.1:0'], sites: [{ routes: [{ path: '/', static: { root: './pub', file_cache: { valid: '200ms' } } }] }] }));
    const config = loadConfigFile(file);
    assert.equal(optionsOf(staticKind, config.sites[0]!.routes[0]!).file_cache.valid, 200);
    assert.equal(config.file, file);
  });

  test('errors in a JSON config are located too', () => {
    mkdirSync(path.join(dir, 'json'), { recursive: true });
    const file = path.join(dir, 'json', 'bad.json');
    writeFileSync(file, '{\n  "sites": [\n    { "routes": [ { "path": "/", "static": { "root": "./nothere" } } ] }\n  ]\n}\n');
    assert.throws(
      () => loadConfigFile(file),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        const issue = err.issues[0]!;
        assert.deepEqual([issue.line, issue.col, issue.keyPath, issue.message], [3, 54, 'sites[0].routes[0].static.root', 'directory ./nothere does not exist']);
        return true;
      },
    );
  });

  test('a missing config file is a config error naming its absolute path and that it does not exist, without a line', () => {
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      assert.throws(
        () => loadConfigFile('absent.yaml'),
        (err: unknown) => err instanceof ConfigError && err.message === `${path.join(process.cwd(), 'absent.yaml')}: cannot read the config file: it does not exist`,
      );
    } finally {
      process.chdir(cwd);
    }
  });
});
