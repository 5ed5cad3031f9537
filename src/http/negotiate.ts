/** Content negotiation for `Accept-Encoding` (RFC 9110 §12.5.3) and which types are worth compressing. Pure. */

/** Encodings Portico can send, in order of preference when the client weighs them equally. */
export type Encoding = 'br' | 'gzip' | 'identity';

/**
 * The best encoding among `available` (always including identity unless the client forbids it) for an
 * `Accept-Encoding` value. `null` when the client refuses every encoding available, identity included.
 */
export function negotiateEncoding(header: string | undefined, available: readonly Encoding[]): Encoding | null {
  if (header === undefined) return 'identity';
  const q = new Map<string, number>();
  for (const part of header.split(',')) {
    const [rawName, ...params] = part.split(';');
    const name = rawName!.trim().toLowerCase();
    if (name === '') continue;
    let weight = 1;
    for (const param of params) {
      const m = /^\s*q\s*=\s*([01](?:\.\d{0,3})?)\s*$/i.exec(param);
      if (m !== null) weight = Number(m[1]);
    }
    q.set(name === 'x-gzip' ? 'gzip' : name, weight);
  }
  const star = q.get('*');
  // An unlisted identity is acceptable but not preferred: it weighs as `*`, else as the lowest positive q listed
  // (as the `negotiator` package does), so `br;q=0.5, gzip;q=0.8` still gets gzip rather than identity.
  let identity = star;
  if (identity === undefined) {
    identity = 1;
    for (const weight of q.values()) if (weight > 0 && weight < identity) identity = weight;
  }
  const weightOf = (enc: Encoding): number => {
    const explicit = q.get(enc);
    if (explicit !== undefined) return explicit;
    return enc === 'identity' ? identity : (star ?? 0);
  };
  let best: Encoding | null = null;
  let bestQ = 0;
  for (const enc of available) {
    const w = weightOf(enc);
    if (w > bestQ) {
      best = enc;
      bestQ = w;
    }
  }
  return best;
}

const COMPRESSIBLE = /^(?:text\/|application\/(?:json|javascript|ecmascript|xml|xhtml\+xml|rss\+xml|atom\+xml|ld\+json|manifest\+json|wasm|x-javascript|vnd\.ms-fontobject|x-font-ttf|x-font-opentype)|image\/(?:svg\+xml|x-icon|vnd\.microsoft\.icon|bmp)|font\/(?:ttf|otf|eot)|[^;]*\+(?:json|xml)\b)/i;

/** Whether a content type is worth compressing (text, JSON, JS, XML, SVG, WASM, uncompressed fonts). */
export function isCompressible(contentType: string): boolean {
  return COMPRESSIBLE.test(contentType);
}
