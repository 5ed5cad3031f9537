/**
 * The layer order of `layers.mjs`, checked over src/ with dependency-cruiser (type imports count): no cycle,
 * no upward import, no import between rooms of one layer.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
type LayersModule = { checkLayers(root: string): Promise<string[]> };
const layers = (await import(path.join(root, 'layers.mjs'))) as LayersModule;

describe('layers', () => {
  test('src/ has no cycle, no upward import and no sideways import (layers.mjs)', async () => {
    const violations = await layers.checkLayers(root);
    assert.deepEqual(violations, [], `violations:\n${violations.join('\n')}`);
  });

  test('the check reports an upward type import and a cycle (it can fail)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'portico-layers-'));
    try {
      copyFileSync(path.join(root, 'tsconfig.json'), path.join(dir, 'tsconfig.json'));
      for (const folder of ['http', 'server', 'cache']) mkdirSync(path.join(dir, 'src', folder), { recursive: true });
      writeFileSync(path.join(dir, 'src/server/app.ts'), 'export interface App { name: string }\n');
      writeFileSync(path.join(dir, 'src/http/send.ts'), "import type { App } from '../server/app.js';\nexport const x = (a: App) => a.name;\n");
      writeFileSync(path.join(dir, 'src/cache/a.ts'), "import type { B } from './b.js';\nexport interface A { b?: B }\n");
      writeFileSync(path.join(dir, 'src/cache/b.ts'), "import type { A } from './a.js';\nexport interface B { a?: A }\n");
      const violations = await layers.checkLayers(dir);
      assert.ok(violations.some((v) => v.startsWith('src/http/send.ts → src/server/app.ts (http-imports-upward)')), violations.join('\n'));
      assert.ok(violations.some((v) => v.includes('src/cache/a.ts') && v.includes('(no-cycle)')), violations.join('\n'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
