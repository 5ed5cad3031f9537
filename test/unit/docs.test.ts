/**
 * The docs kept honest mechanically (README.md and docs/*.md): every relative link resolves, to a file and to
 * an #anchor as GitHub renders headings; every ```yaml block that is a whole config (`sites:` at its top level)
 * is accepted by the config loader, in a folder holding the files the examples name (a static root, an error
 * page, certificates, an htpasswd file); every key the reference config of docs/configuration.md names exists
 * in the schema, and every top-level, listener, site and route key of the schema is named there; every folder
 * of src/ is named in docs/architecture.md, and every folder of the repository and of src/ in README's Layout.
 *
 * A block may opt out with a `# docs-test: skip (why)` line; none does today.
 * What the pages claim about behaviour is tested by the tests that name the page in their opening comment.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { configSchema } from '../../src/config/schema.js';
import { ConfigError, formatConfigIssue } from '../../src/errors.js';
import { configParts, parseConfig } from '../../src/server/config.js';
import { createCertificate } from '../../src/tls/self-signed.js';
import { makeTree } from '../helpers/portico.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const pages = ['README.md', ...readdirSync(path.join(root, 'docs')).filter((name) => name.endsWith('.md')).map((name) => `docs/${name}`)];

/** A Markdown page split into what GitHub renders as text and its fenced code blocks. */
interface Page {
  file: string;
  /** Lines outside fences, with their line numbers. */
  prose: Array<{ line: number; text: string }>;
  /** Fenced blocks: info string, first line number, content. */
  blocks: Array<{ info: string; line: number; text: string }>;
}

function readPage(file: string): Page {
  const lines = readFileSync(path.join(root, file), 'utf8').split('\n');
  const page: Page = { file, prose: [], blocks: [] };
  let block: { info: string; line: number; lines: string[] } | undefined;
  lines.forEach((text, index) => {
    const fence = /^\s*```(.*)$/.exec(text);
    if (block !== undefined) {
      if (fence !== null && fence[1]!.trim() === '') {
        page.blocks.push({ info: block.info, line: block.line, text: block.lines.join('\n') });
        block = undefined;
      } else block.lines.push(text);
    } else if (fence !== null) block = { info: fence[1]!.trim(), line: index + 2, lines: [] };
    else page.prose.push({ line: index + 1, text });
  });
  assert.equal(block, undefined, `${file}: a code fence opened at line ${block?.line} is never closed`);
  return page;
}

const read = new Map(pages.map((file) => [file, readPage(file)]));

/** A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** The anchors of a page's headings (a repeated heading gets -1, -2, … as on GitHub). */
function anchorsOf(page: Page): Set<string> {
  const anchors = new Set<string>();
  const counts = new Map<string, number>();
  for (const { text } of page.prose) {
    const heading = /^#{1,6}\s+(.*)$/.exec(text);
    if (heading === null) continue;
    const base = slug(heading[1]!);
    const seen = counts.get(base) ?? 0;
    counts.set(base, seen + 1);
    anchors.add(seen === 0 ? base : `${base}-${seen}`);
  }
  return anchors;
}

describe('docs: links', () => {
  for (const page of read.values()) {
    test(`every relative link of ${page.file} names a file that exists and an anchor its page has`, () => {
      const broken: string[] = [];
      for (const { line, text } of page.prose) {
        const withoutCode = text.replace(/`[^`]*`/g, '');
        for (const match of withoutCode.matchAll(/\]\(([^)\s]+)\)/g)) {
          const target = match[1]!;
          if (/^[a-z]+:/i.test(target)) continue;
          const [file, anchor] = target.split('#') as [string, string | undefined];
          const resolved = file === '' ? page.file : path.posix.normalize(path.posix.join(path.posix.dirname(page.file), file));
          if (!existsSync(path.join(root, resolved))) {
            broken.push(`${page.file}:${line} ${target}: no file ${resolved}`);
            continue;
          }
          if (anchor === undefined) continue;
          const linked = read.get(resolved);
          if (linked === undefined) broken.push(`${page.file}:${line} ${target}: an anchor into a page this test does not read`);
          else if (!anchorsOf(linked).has(anchor)) broken.push(`${page.file}:${line} ${target}: ${resolved} has no heading #${anchor}`);
        }
      }
      assert.deepEqual(broken, []);
    });
  }
});

describe('docs: example configs', () => {
  let dir = '';
  before(async () => {
    const pair = await createCertificate({ names: ['example.com', 'a.example', 'localhost'] });
    const files: Record<string, string> = {
      'public/index.html': 'hi',
      'wordpress/index.php': '<?php echo "hi";',
      'b/index.html': 'b',
      'errors/404.html': 'gone',
      'var/cache/.keep': '',
      // a bcrypt line, as `htpasswd -nB alice` prints (the showcase's hash)
      'users.htpasswd': 'alice:$2y$10$gcut.yKxB4uV3v2MbCLmzuPrXoLsYEC1JPc9BX3/8XNViWxHBN54S\n',
      'ca.pem': pair.cert,
      'clients.pem': pair.cert,
    };
    for (const name of ['site', 'example', 'a', 'admin']) {
      files[`certs/${name}.pem`] = pair.cert;
      files[`certs/${name}.key`] = pair.key;
    }
    dir = makeTree(files);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const page of read.values()) {
    const configs = page.blocks.filter((block) => {
      if (block.info !== 'yaml') return false;
      const value: unknown = parseYaml(block.text);
      return value !== null && typeof value === 'object' && 'sites' in value;
    });
    if (configs.length === 0) continue;
    test(`every whole config (a yaml block with sites:) of ${page.file} is accepted by the config loader`, () => {
      const refused: string[] = [];
      for (const block of configs) {
        if (/^\s*# docs-test: skip/m.test(block.text)) continue;
        try {
          parseConfig(block.text, `${page.file}@${block.line}`, dir);
        } catch (err) {
          if (!(err instanceof ConfigError)) throw err;
          refused.push(...err.issues.map((issue) => `${page.file}, block at line ${block.line}: ${formatConfigIssue(issue)}`));
        }
      }
      assert.deepEqual(refused, []);
    });
  }
});

/** The zod internals this walk reads: a schema's definition, whatever its kind. */
type Def = { type: string; shape?: Record<string, z.ZodType> } & Record<string, unknown>;
const defOf = (schema: unknown): Def | undefined => (schema as { _zod?: { def: Def } } | null)?._zod?.def;

/** The schemas a definition holds (inner types, union options, array elements, pipe ends, record values). */
function innerSchemas(def: Def): unknown[] {
  const inner: unknown[] = [];
  for (const [name, value] of Object.entries(def)) {
    if (name === 'shape') continue;
    if (Array.isArray(value)) inner.push(...value.filter((item) => defOf(item) !== undefined));
    else if (defOf(value) !== undefined) inner.push(value);
  }
  return inner;
}

/** Every key of every object anywhere in a schema. */
function allKeys(schema: unknown, keys = new Set<string>(), seen = new Set<unknown>()): Set<string> {
  const def = defOf(schema);
  if (def === undefined || seen.has(schema)) return keys;
  seen.add(schema);
  if (def.type === 'object') {
    for (const [key, value] of Object.entries(def.shape!)) {
      keys.add(key);
      allKeys(value, keys, seen);
    }
  }
  for (const inner of innerSchemas(def)) allKeys(inner, keys, seen);
  return keys;
}

/** The object shapes a schema is (through defaults, unions, arrays and transforms), not those nested in them. */
function shapesOf(schema: unknown, seen = new Set<unknown>()): Array<Record<string, z.ZodType>> {
  const def = defOf(schema);
  if (def === undefined || seen.has(schema)) return [];
  seen.add(schema);
  if (def.type === 'object') return [def.shape!];
  return innerSchemas(def).flatMap((inner) => shapesOf(inner, seen));
}

/**
 * Keys the reference config names, in its YAML or in its commented-out YAML (`#   - addr: …`), but for the
 * names it gives upstreams and caches.
 */
function referenceKeys(text: string): Map<string, number> {
  const keys = new Map<string, number>();
  const config = parseYaml(text) as Record<string, Record<string, unknown> | undefined>;
  const names = new Set([...Object.keys(config.upstreams ?? {}), ...Object.keys(config.caches ?? {})]);
  text.split('\n').forEach((raw, index) => {
    // A commented-out config line is `#` then a key (`#     http2: true`); a line of explanation is `# ` then text.
    const line = raw.replace(/^(\s*)#(?=\s+(?:- )?[a-z_][a-z0-9_]*:\s)/, '$1').replace(/(^|\s)#.*$/, '');
    const block = /^\s*(?:-\s+)?([a-z_][a-z0-9_]*):(?:\s|$)/.exec(line);
    if (block !== null && !names.has(block[1]!)) keys.set(block[1]!, index + 1);
    for (const flow of line.matchAll(/[{,]\s*([a-z_][a-z0-9_]*):\s/g)) if (!names.has(flow[1]!)) keys.set(flow[1]!, index + 1);
  });
  return keys;
}

describe('docs: the reference config', () => {
  const configuration = read.get('docs/configuration.md')!;
  const reference = configuration.blocks.find((block) => block.info === 'yaml')!;
  const named = referenceKeys(reference.text);
  const schema = configSchema(configParts());

  test('every key the reference config of docs/configuration.md names exists in the config schema', () => {
    const known = allKeys(schema);
    const unknown = [...named].filter(([key]) => !known.has(key)).map(([key, line]) => `${key} (line ${reference.line + line - 1})`);
    assert.deepEqual(unknown, []);
  });

  test('every top-level, listener, site and route key of the schema is named in the reference config', () => {
    const [top] = shapesOf(schema);
    const levels: Record<string, Array<Record<string, z.ZodType>>> = {
      'top-level': [top!],
      listener: shapesOf(top!.listen),
      site: shapesOf(top!.sites),
      route: shapesOf(top!.sites).flatMap((site) => shapesOf(site.routes)),
    };
    const missing: string[] = [];
    for (const [level, shapes] of Object.entries(levels)) {
      assert.ok(shapes.length > 0, `no ${level} object found in the schema`);
      for (const key of new Set(shapes.flatMap((shape) => Object.keys(shape)))) if (!named.has(key)) missing.push(`${level} ${key}`);
    }
    assert.deepEqual(missing, []);
  });

  test('every key of the config schema, at any depth, is named somewhere in README.md or docs/*.md', () => {
    const text = [...read.values()].map((page) => readFileSync(path.join(root, page.file), 'utf8')).join('\n');
    // Named: `key`, key: (YAML), or .key (a key path); a key documented in prose is quoted as `key`.
    const unnamed = [...allKeys(schema)].filter((key) => !new RegExp(`(\`|[.\\s{,])${key}(\`|:)`).test(text));
    assert.deepEqual(unnamed, []);
  });
});

/** Folders under `dir` (relative to the repository), recursively. */
function foldersUnder(dir: string): string[] {
  return readdirSync(path.join(root, dir))
    .map((name) => `${dir}/${name}`)
    .filter((rel) => statSync(path.join(root, rel)).isDirectory())
    .flatMap((rel) => [rel, ...foldersUnder(rel)]);
}

describe('docs: layout', () => {
  test('every folder of src/ is named in docs/architecture.md (as src/…/)', () => {
    const text = readFileSync(path.join(root, 'docs/architecture.md'), 'utf8');
    assert.deepEqual(foldersUnder('src').filter((folder) => !text.includes(`${folder}/`)), []);
  });

  test("README's Layout names every folder of the repository and every folder of src/", () => {
    const text = readFileSync(path.join(root, 'README.md'), 'utf8');
    const layout = text.slice(text.indexOf('## Layout'));
    const ignored = new Set(['.git', 'node_modules', 'dist', 'var', 'test-artifacts']);
    const top = readdirSync(root).filter((name) => !ignored.has(name) && statSync(path.join(root, name)).isDirectory());
    const src = readdirSync(path.join(root, 'src')).filter((name) => statSync(path.join(root, 'src', name)).isDirectory());
    const missing = [...top.map((name) => `${name}/`), ...src.map((name) => `src/${name}/`)].filter((folder) => !new RegExp(`(^|\\s)${folder.replace(/\./g, '\\.')}`, 'm').test(layout));
    assert.deepEqual(missing, []);
  });
});
