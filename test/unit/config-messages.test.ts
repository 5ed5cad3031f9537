import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { didYouMean, editDistance, nearestNames, shown } from '../../src/config/messages.js';

describe('config messages: the nearest known name', () => {
  test('edit distance counts insertions, deletions and substitutions', () => {
    assert.equal(editDistance('', ''), 0);
    assert.equal(editDistance('root', 'root'), 0);
    assert.equal(editDistance('rot', 'root'), 1);
    assert.equal(editDistance('root', 'rot'), 1);
    assert.equal(editDistance('kitten', 'sitting'), 3);
    assert.equal(editDistance('', 'abc'), 3);
  });

  test('two neighbours swapped count as one edit (Damerau), so a swap in a five-letter key still gets its suggestion', () => {
    assert.equal(editDistance('rotue', 'route'), 1);
    assert.equal(editDistance('plociy', 'policy'), 2);
    assert.equal(editDistance('ab', 'ba'), 1);
    assert.deepEqual(nearestNames('rotue', ['route', 'routes', 'hosts']), ['route']);
    assert.deepEqual(nearestNames('psth', ['path', 'proxy']), ['path']);
    assert.deepEqual(nearestNames('hsots', ['hosts', 'routes']), ['hosts']);
  });

  test('a misspelt name gets the nearest known one; case, "-" and "_" do not count', () => {
    const keys = ['upstream', 'url', 'strip_prefix', 'host', 'set_headers'];
    assert.deepEqual(nearestNames('upsteam', keys), ['upstream']);
    assert.deepEqual(nearestNames('stripPrefix', keys), ['strip_prefix']);
    assert.deepEqual(nearestNames('strip-prefix', keys), ['strip_prefix']);
    assert.deepEqual(nearestNames('set_header', keys), ['set_headers']);
  });

  test('a name far from every known one gets no suggestion', () => {
    assert.deepEqual(nearestNames('colour', ['listen', 'log', 'sites', 'upstreams']), []);
    assert.deepEqual(nearestNames('x', ['url', 'host']), []);
    assert.equal(didYouMean('colour', ['listen', 'log']), '');
  });

  test('other servers\' names lead to Portico\'s (proxy_pass, pass → upstream or url; server_name → hosts), only where the object has them', () => {
    assert.deepEqual(nearestNames('pass', ['upstream', 'url', 'host']), ['upstream', 'url']);
    assert.deepEqual(nearestNames('proxy_pass', ['upstream', 'url']), ['upstream', 'url']);
    assert.deepEqual(nearestNames('server_name', ['hosts', 'routes']), ['hosts']);
    assert.deepEqual(nearestNames('pass', ['path', 'respond']), []);
  });

  test('equally near names: those that begin as the name does come first', () => {
    assert.deepEqual(nearestNames('hots', ['hosts', 'hsts', 'routes']), ['hosts']);
  });

  test('the suggestion reads as a question listing the names', () => {
    assert.equal(didYouMean('upsteam', ['upstream']), ' (did you mean "upstream"?)');
    assert.equal(didYouMean('pass', ['upstream', 'url']), ' (did you mean "upstream" or "url"?)');
  });

  test('values are shown quoted, long ones cut, lists and maps by kind', () => {
    assert.equal(shown('api/'), '"api/"');
    assert.equal(shown('x'.repeat(100)), JSON.stringify(`${'x'.repeat(57)}...`));
    assert.equal(shown(3), '3');
    assert.equal(shown(true), 'true');
    assert.equal(shown(null), 'nothing (null)');
    assert.equal(shown([1]), 'a list');
    assert.equal(shown({ a: 1 }), 'a map of keys');
  });
});
