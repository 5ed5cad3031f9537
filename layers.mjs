/**
 * Portico's layers, from the top down: the one place the dependency direction is written. A module may import
 * its own room and any room of a lower layer; never a higher layer, nor another room of its own layer. Type
 * imports count. `test/unit/layers.test.ts` checks the tree against this file with dependency-cruiser, inside
 * `npm test`; `npm run layers` prints the same check.
 */

/** Each layer is a list of rooms (name and path pattern); the first layer is the top. */
export const LAYERS = [
  [{ room: 'cli', path: '^src/cli\\.ts$' }],
  [{ room: 'server', path: '^src/server/' }],
  [
    { room: 'handlers', path: '^src/handlers/' },
    { room: 'connections', path: '^src/connections/' },
  ],
  [
    { room: 'upstream', path: '^src/upstream/' },
    { room: 'cache', path: '^src/cache/' },
    { room: 'tls', path: '^src/tls/' },
    { room: 'control', path: '^src/control/' },
    { room: 'supervise', path: '^src/supervise/' },
  ],
  [{ room: 'cluster', path: '^src/cluster/' }],
  [
    { room: 'config', path: '^src/config/' },
    { room: 'log', path: '^src/log/' },
    { room: 'metrics', path: '^src/metrics/' },
  ],
  [
    { room: 'http', path: '^src/http/' },
    { room: 'errors', path: '^src/errors\\.ts$' },
  ],
];

/** Rooms of the same layer that may use each other (a pair per entry: from, to). */
export const SIDEWAYS = [['http', 'errors']];

/** The dependency-cruiser rule set that enforces LAYERS, plus no cycles and no unresolvable import. */
export function layerRules() {
  const forbidden = [
    { name: 'no-cycle', severity: 'error', comment: 'a cycle is a defect even when the compiler accepts it', from: {}, to: { circular: true } },
    { name: 'not-to-unresolvable', severity: 'error', from: {}, to: { couldNotResolve: true } },
  ];
  LAYERS.forEach((layer, i) => {
    const higher = LAYERS.slice(0, i).flat().map((r) => r.path);
    for (const room of layer) {
      if (higher.length > 0) {
        forbidden.push({
          name: `${room.room}-imports-upward`,
          severity: 'error',
          comment: `${room.room} is below ${LAYERS.slice(0, i).flat().map((r) => r.room).join(', ')}`,
          from: { path: room.path },
          to: { path: higher.join('|') },
        });
      }
      const siblings = layer.filter((other) => other !== room && !SIDEWAYS.some(([a, b]) => a === room.room && b === other.room));
      if (siblings.length > 0) {
        forbidden.push({
          name: `${room.room}-imports-sideways`,
          severity: 'error',
          comment: `${room.room} and ${siblings.map((r) => r.room).join(', ')} share a layer`,
          from: { path: room.path },
          to: { path: siblings.map((r) => r.path).join('|') },
        });
      }
    }
  });
  return { forbidden };
}

/** Runs the check over `src/` of `root`; resolves to the violations as `from → to (rule)` lines. */
export async function checkLayers(root) {
  const { cruise } = await import('dependency-cruiser');
  const previous = process.cwd();
  process.chdir(root);
  try {
    const result = await cruise(['src'], {
      validate: true,
      ruleSet: layerRules(),
      tsPreCompilationDeps: true,
      tsConfig: { fileName: 'tsconfig.json' },
      doNotFollow: { path: 'node_modules' },
      exclude: { path: '^(node_modules|dist)/' },
      // Packages that name their entry only in `exports` (no `main`), such as structured-headers, resolve as Node does.
      enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default', 'types'] },
    }, undefined, { tsConfig: { options: { module: 'nodenext', moduleResolution: 'nodenext' } } });
    const output = result.output;
    return output.summary.violations.map((v) => `${v.from} → ${v.to} (${v.rule.name})`);
  } finally {
    process.chdir(previous);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const violations = await checkLayers(process.cwd());
  for (const line of violations) console.log(line);
  console.log(violations.length === 0 ? 'layers: OK, no cycle and no upward import' : `layers: ${violations.length} violation(s)`);
  process.exitCode = violations.length === 0 ? 0 : 1;
}
