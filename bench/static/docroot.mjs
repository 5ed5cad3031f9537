// The static benchmark's docroot: the same 1 KiB and 100 KiB files on every run and for every server.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** The files measured, in table order. */
export const FILES = [
  { name: '1k.txt', label: '1 KiB', size: 1024 },
  { name: '100k.txt', label: '100 KiB', size: 100 * 1024 },
];

/** Printable bytes from a fixed seed, so every run serves the same files. */
function makeBody(size, seed) {
  const body = Buffer.alloc(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    body[i] = i % 64 === 63 ? 10 : 32 + ((x >>> 16) % 95);
  }
  return body;
}

/** Writes the benchmark's files into a fresh `docroot`; returns their bytes by name. */
export function makeDocroot(docroot) {
  rmSync(docroot, { recursive: true, force: true });
  mkdirSync(docroot, { recursive: true });
  const bodies = new Map();
  for (const [i, file] of FILES.entries()) {
    const body = makeBody(file.size, 7 + i);
    writeFileSync(path.join(docroot, file.name), body);
    bodies.set(file.name, body);
  }
  return { docroot, bodies };
}

