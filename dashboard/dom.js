/* Portico's dashboard: small DOM helpers. */

/** The element of an id. */
export const $ = (id) => document.getElementById(id);

/** An element with a class, text and attributes. */
export function el(tag, className, text, attrs) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (attrs) for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** Sets a node's text only when it changed (no needless layout). */
export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

/** A message at the bottom right for a few seconds (an action's outcome); `bad` for a failure. */
export function toast(message, bad) {
  const node = el('div', bad ? 'toast toast-bad' : 'toast', message);
  $('toasts').append(node);
  setTimeout(() => node.remove(), bad ? 8000 : 4000);
}
