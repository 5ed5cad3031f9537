/** The HTML directory listing for `autoindex: true`: names escaped for HTML, links percent-encoded. */
import { promises as fs } from 'node:fs';

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escapes text for HTML content and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);
}

/** Renders the listing of `dir` shown at `requestPath`; dotfiles are left out unless `showHidden`. */
export async function renderListing(dir: string, requestPath: string, showHidden: boolean): Promise<Buffer> {
  const entries = await fs.readdir(dir, { withFileTypes: true });
  const rows = entries
    .filter((entry) => showHidden || !entry.name.startsWith('.'))
    .sort((a, b) => Number(b.isDirectory()) - Number(a.isDirectory()) || a.name.localeCompare(b.name))
    .map((entry) => {
      const name = entry.isDirectory() ? `${entry.name}/` : entry.name;
      const href = encodeURIComponent(entry.name) + (entry.isDirectory() ? '/' : '');
      return `<li><a href="${escapeHtml(href)}">${escapeHtml(name)}</a></li>`;
    });
  const title = `Index of ${escapeHtml(decodeURIComponentSafe(requestPath))}`;
  const parent = requestPath === '/' ? '' : '<li><a href="../">../</a></li>';
  return Buffer.from(
    `<!doctype html>\n<html><head><meta charset="utf-8"><title>${title}</title></head>` +
      `<body><h1>${title}</h1><ul>${parent}${rows.join('')}</ul></body></html>\n`,
  );
}

function decodeURIComponentSafe(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}
