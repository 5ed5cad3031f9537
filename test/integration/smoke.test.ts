import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startPortico, type RunningPortico } from '../helpers/portico.js';

let portico: RunningPortico;
before(async () => {
  portico = await startPortico(
    `sites:
  - routes:
      - path: /healthz
        respond: { body: "ok" }
      - path: /
        static: { root: ./public }
`,
    { 'public/index.html': '<h1>hi</h1>' },
  );
});
after(() => portico.stop());

test('serves the index file of the root folder with its content type', async () => {
  const res = await fetch(`${portico.url}/`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
  assert.equal(await res.text(), '<h1>hi</h1>');
});

test('a respond route answers its fixed body', async () => {
  const res = await fetch(`${portico.url}/healthz`);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'ok');
});
