/**
 * A YAML syntax error as a person can act on it. The yaml library recovers from a mistake and reports what follows
 * from it too: one line indented wrong comes out as five errors, at column 1 or on the line above, in its own
 * terms ("A block sequence may not be used as an implicit map key"). Portico reports the first error only (as
 * nginx and most YAML parsers stop at the first), and an indentation mistake at the line that is wrong; a tab in
 * the indentation and a key written twice are named as such.
 */
import { isScalar, visit, type Document, type LineCounter, type YAMLError } from 'yaml';

/** Where the syntax error is (1-based) and what it is. */
export interface SyntaxProblem {
  line: number;
  col: number;
  message: string;
}

/** Errors the yaml library gives for a line indented wrong (and for what follows from one). */
const INDENTATION_CODES = new Set(['BAD_INDENT', 'BLOCK_AS_IMPLICIT_KEY', 'MULTILINE_IMPLICIT_KEY']);
const INDENTATION_MISSING = /^(Sequence item without - indicator|Implicit map keys need to be followed by map values)/;

interface SourceLine {
  /** Spaces before the content. */
  indent: number;
  /** Columns (0-based) where blocks start on this line: the indent, and the content after each `- `. */
  starts: number[];
  /** Whether the line opens a block below it (`key:` with nothing after it, or a lone `-`). */
  opens: boolean;
  /** Whether the line starts a block scalar (`key: |`), whose lines are text, not structure. */
  scalar: boolean;
}

/** The structure of a line, or undefined for a blank or comment-only line. */
function readLine(text: string): SourceLine | undefined {
  const indent = /^ */.exec(text)![0].length;
  const content = text.slice(indent).replace(/\s+#.*$/, '').trimEnd();
  if (content === '' || content.startsWith('#')) return undefined;
  const starts = [indent];
  let rest = content;
  while (/^-( |$)/.test(rest)) {
    const after = /^- */.exec(rest)![0].length;
    rest = rest.slice(after);
    if (rest !== '') starts.push(starts.at(-1)! + after);
  }
  return { indent, starts, opens: rest === '' || rest.endsWith(':'), scalar: /:\s*[|>][-+0-9]*$/.test(rest) };
}

/**
 * Whether line `index` (0-based) is indented where no block above it is open, with the block columns it could
 * line up with; undefined when the lines above cannot be read this simply (a block scalar).
 */
function misindented(lines: readonly string[], index: number): { indent: number; columns: number[] } | false | undefined {
  const line = readLine(lines[index] ?? '');
  if (line === undefined) return false;
  // The columns of the blocks still open after each line above: deeper ones close at a shallower line.
  let open: number[] = [];
  let previous: SourceLine | undefined;
  for (let i = 0; i < index; i++) {
    const above = readLine(lines[i]!);
    if (above === undefined) continue;
    if (previous?.scalar) return undefined;
    open = [...open.filter((column) => column < above.indent), ...above.starts];
    previous = above;
  }
  if (open.includes(line.indent)) return false;
  if (line.indent > Math.max(-1, ...open) && (previous === undefined || previous.opens)) return false;
  return { indent: line.indent, columns: [...new Set(open)].sort((a, b) => a - b) };
}

function spaces(n: number): string {
  return `${n} space${n === 1 ? '' : 's'}`;
}

/**
 * `duplicate key "sites" (first at line 2)` for a key written twice in one map, whose second occurrence starts at
 * `offset`; undefined when the document does not show it.
 */
function duplicateKey(doc: Document, offset: number, counter: LineCounter): string | undefined {
  let message: string | undefined;
  visit(doc, {
    Map(_, map) {
      const second = map.items.find((pair) => isScalar(pair.key) && pair.key.range?.[0] === offset);
      if (second === undefined || !isScalar(second.key)) return undefined;
      const name = second.key.value;
      const first = map.items.find((pair) => isScalar(pair.key) && pair.key.value === name);
      const start = isScalar(first?.key) ? first.key.range?.[0] : undefined;
      const line = start === undefined ? '' : ` (first at line ${counter.linePos(start).line})`;
      message = `duplicate key ${JSON.stringify(String(name))}${line}: keep one of them, or merge what they hold`;
      return visit.BREAK;
    },
  });
  return message;
}

/** The one syntax error to report of a document's `errors`, at the line that is wrong. */
export function syntaxProblem(errors: readonly YAMLError[], text: string, counter: LineCounter, doc: Document): SyntaxProblem {
  const first = [...errors].sort((a, b) => a.pos[0] - b.pos[0])[0]!;
  const at = counter.linePos(first.pos[0]);
  const message = first.message.split('\n')[0]!;
  if (first.code === 'DUPLICATE_KEY') return { ...at, message: duplicateKey(doc, first.pos[0], counter) ?? message };
  // A tab in the indentation confuses the library about the line before it too: the tab is what to fix.
  const tab = errors.find((error) => error.code === 'TAB_AS_INDENT');
  if (tab !== undefined) return { ...counter.linePos(tab.pos[0]), message: 'a tab in the indentation: YAML indents with spaces only' };
  if (INDENTATION_CODES.has(first.code) || (first.code === 'MISSING_CHAR' && INDENTATION_MISSING.test(message))) {
    const lines = text.split(/\r?\n/);
    // The error may sit on the line before the wrong one (`- path: /` then a line indented too far reads as a
    // key running over two lines): the first of the two that no open block can hold is the one to fix.
    let next = at.line;
    while (next < lines.length && readLine(lines[next]!) === undefined) next++;
    for (const index of [at.line - 1, next]) {
      const wrong = misindented(lines, index);
      if (wrong === undefined) break;
      if (wrong === false) continue;
      const below = wrong.columns.filter((column) => column < wrong.indent).at(-1);
      const above = wrong.columns.find((column) => column > wrong.indent);
      const fits = [below, above].filter((column) => column !== undefined).join(' or ');
      return {
        line: index + 1,
        col: wrong.indent + 1,
        message: `bad indentation: this line is indented ${spaces(wrong.indent)}${fits === '' ? '' : `, where the blocks above it are at ${fits}`}`,
      };
    }
  }
  return { line: at.line, col: at.col, message };
}
