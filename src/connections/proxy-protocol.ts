/**
 * The PROXY protocol (HAProxy's, versions 1 and 2): an L4 load balancer writes, before anything else on the
 * connection, where the client's connection really came from. `parseProxyHeader` is a strict parser of the
 * bytes received so far; `readProxyHeader` reads one header off a raw socket (before TLS or HTTP) and leaves
 * whatever follows it on the socket for the next stage.
 *
 * Why not `proxy-protocol-js`: it parses a buffer already known to hold a whole header, and accepts what the
 * spec says to reject (a v1 line past 107 bytes, ports with leading zeros); here the header arrives in pieces
 * and its end has to be found while bounding how much is read.
 */
import net from 'node:net';
import type { Socket } from 'node:net';

/** The v2 signature: `\r\n\r\n\0\r\nQUIT\n`. */
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
/** The longest v1 line, CRLF included (spec §2.1). */
export const V1_MAX = 107;
/**
 * The longest v2 header accepted: the 16-byte head, the largest address block (UNIX, 216 bytes) and TLVs. The
 * spec allows 64 KB; load balancers send a few TLVs (AWS's VPC endpoint id, GCP's connection id): HAProxy's own
 * limit is its buffer, nginx's 4 KB-ish. Longer is refused as malformed.
 */
export const V2_MAX = 4096;

/** Where the connection came from, per the header; `undefined` source: use the TCP peer (v1 UNKNOWN, v2 LOCAL). */
export interface ProxySource {
  address: string;
  port: number;
}

/** The outcome of looking at the bytes received so far. */
export type ProxyParse =
  | { kind: 'incomplete' }
  | { kind: 'invalid'; reason: string }
  | { kind: 'done'; length: number; source: ProxySource | undefined };

const INCOMPLETE: ProxyParse = { kind: 'incomplete' };
const invalid = (reason: string): ProxyParse => ({ kind: 'invalid', reason });

/** Whether `data` so far agrees with the start of `expected`. */
function startsLike(data: Buffer, expected: Buffer): boolean {
  const n = Math.min(data.length, expected.length);
  return data.subarray(0, n).equals(expected.subarray(0, n));
}

/** Parses a PROXY header (v1 or v2) at the start of `data`, the bytes received so far. */
export function parseProxyHeader(data: Buffer): ProxyParse {
  if (data.length === 0) return INCOMPLETE;
  if (data[0] === 0x0d) {
    if (!startsLike(data, V2_SIGNATURE)) return invalid('not a PROXY protocol header');
    return parseV2(data);
  }
  if (!startsLike(data, V1_PREFIX)) return invalid('not a PROXY protocol header');
  return parseV1(data);
}

/** A decimal port without sign or leading zero (spec: "0" is not allowed as a leading digit). */
function v1Port(text: string): number | undefined {
  if (!/^(?:[1-9]\d{0,4}|0)$/.test(text)) return undefined;
  const port = Number(text);
  return port <= 65535 ? port : undefined;
}

function parseV1(data: Buffer): ProxyParse {
  const end = data.subarray(0, V1_MAX).indexOf('\r\n', 0, 'latin1');
  if (end === -1) return data.length >= V1_MAX ? invalid('v1 header longer than 107 bytes') : INCOMPLETE;
  const line = data.subarray(0, end).toString('latin1');
  const parts = line.split(' ');
  if (parts[1] === 'UNKNOWN') return { kind: 'done', length: end + 2, source: undefined };
  if (parts.length !== 6) return invalid('v1 header: expected "PROXY TCP4|TCP6 src dst sport dport"');
  const [, family, src, dst, sport, dport] = parts as [string, string, string, string, string, string];
  const want = family === 'TCP4' ? 4 : family === 'TCP6' ? 6 : 0;
  if (want === 0) return invalid(`v1 header: unknown protocol ${JSON.stringify(family.slice(0, 16))}`);
  if (net.isIP(src) !== want || net.isIP(dst) !== want) return invalid('v1 header: bad address');
  const port = v1Port(sport);
  if (port === undefined || v1Port(dport) === undefined) return invalid('v1 header: bad port');
  return { kind: 'done', length: end + 2, source: { address: src, port } };
}

function ipv6(bytes: Buffer): string {
  // An IPv4-mapped address is the IPv4 client it stands for (as `stripMapped` makes of a peer's).
  if (bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) return `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  // Normalised by the URL parser's rules (`::` for the longest zero run), as Node prints peer addresses.
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
}

function parseV2(data: Buffer): ProxyParse {
  if (data.length < 16) return INCOMPLETE;
  const versionCommand = data[12]!;
  if (versionCommand >> 4 !== 2) return invalid('v2 header: unsupported version');
  const command = versionCommand & 0x0f;
  if (command > 1) return invalid('v2 header: unknown command');
  const family = data[13]! >> 4;
  const transport = data[13]! & 0x0f;
  if (family > 3 || transport > 2) return invalid('v2 header: unknown address family or transport');
  const length = 16 + data.readUInt16BE(14);
  if (length > V2_MAX) return invalid(`v2 header longer than ${V2_MAX} bytes`);
  const need = family === 1 ? 12 : family === 2 ? 36 : family === 3 ? 216 : 0;
  if (length - 16 < need) return invalid('v2 header: address block shorter than its family');
  if (data.length < length) return INCOMPLETE;
  // LOCAL (health checks of the balancer itself), UNSPEC, UNIX sockets, datagrams: the real peer is the client.
  if (command === 0 || transport !== 1 || (family !== 1 && family !== 2)) return { kind: 'done', length, source: undefined };
  // TLVs after the addresses are skipped: nothing here needs them.
  if (family === 1) {
    const address = `${data[16]}.${data[17]}.${data[18]}.${data[19]}`;
    return { kind: 'done', length, source: { address, port: data.readUInt16BE(24) } };
  }
  return { kind: 'done', length, source: { address: ipv6(data.subarray(16, 32)), port: data.readUInt16BE(48) } };
}

/** What reading a header off a socket gave. */
export type ProxyRead = { ok: true; source: ProxySource | undefined } | { ok: false; reason: string };

/**
 * Reads one PROXY header off a fresh socket, within `timeoutMs`, then calls `done` once, synchronously from the
 * socket's event: on success the socket is paused with whatever followed the header put back (`unshift`), for
 * the next stage to read; on failure (malformed, too long, timed out, closed) the caller closes it.
 */
export function readProxyHeader(socket: Socket, timeoutMs: number, done: (result: ProxyRead) => void): void {
  let received: Buffer = Buffer.alloc(0);
  let finished = false;
  const finish = (result: ProxyRead) => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('end', onEnd);
    socket.off('close', onEnd);
    socket.off('error', onEnd);
    done(result);
  };
  const onEnd = () => finish({ ok: false, reason: 'connection closed before the PROXY header' });
  const onData = (chunk: Buffer) => {
    received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
    const parsed = parseProxyHeader(received);
    if (parsed.kind === 'incomplete') return;
    if (parsed.kind === 'invalid') return finish({ ok: false, reason: parsed.reason });
    socket.pause();
    if (received.length > parsed.length) socket.unshift(received.subarray(parsed.length));
    finish({ ok: true, source: parsed.source });
  };
  const timer = setTimeout(() => finish({ ok: false, reason: 'no complete PROXY header within header_timeout' }), timeoutMs);
  socket.on('data', onData);
  socket.on('end', onEnd);
  socket.on('close', onEnd);
  socket.on('error', onEnd);
}
