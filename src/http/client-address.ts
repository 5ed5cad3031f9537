/**
 * Who the client really is. The peer of the TCP connection is the client unless it is a trusted proxy; only
 * then are its `X-Forwarded-For` entries believed, walked from the right past every trusted hop (the way
 * nginx's `real_ip_recursive on` does). Anyone else could write whatever they like in those headers.
 */
import net from 'node:net';

/** A set of trusted proxy addresses and networks (`10.0.0.0/8`, `::1`, `192.168.1.7`). */
export class TrustedProxies {
  readonly #list = new net.BlockList();
  readonly #empty: boolean;

  constructor(entries: readonly string[]) {
    for (const entry of entries) {
      const [address, bits] = entry.split('/');
      const family = net.isIPv6(address!) ? 'ipv6' : 'ipv4';
      if (bits === undefined) this.#list.addAddress(address!, family);
      else this.#list.addSubnet(address!, Number(bits), family);
    }
    this.#empty = entries.length === 0;
  }

  /** Whether no peer is trusted (the usual case: nothing forwarded is read). */
  get empty(): boolean {
    return this.#empty;
  }

  /** Whether an address (IPv4, IPv6 or IPv4-mapped IPv6) is trusted. */
  has(address: string): boolean {
    if (this.#empty || address === '') return false;
    const plain = stripMapped(address);
    return this.#list.check(plain, net.isIPv6(plain) ? 'ipv6' : 'ipv4');
  }

  /** The client's address: the peer, or, behind trusted proxies, the rightmost untrusted X-Forwarded-For entry. */
  clientAddress(peer: string, forwardedFor: string | undefined): string {
    const plainPeer = stripMapped(peer);
    if (forwardedFor === undefined || !this.has(plainPeer)) return plainPeer;
    const hops = forwardedFor.split(',');
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hops[i]!.trim();
      if (!net.isIP(hop)) return plainPeer;
      if (!this.has(hop)) return hop;
    }
    return hops[0]!.trim();
  }
}

/** Checks a `trusted_proxies` entry; returns a reason when it is not an address or CIDR. */
export function checkTrustedEntry(entry: string): string | undefined {
  const [address, bits, extra] = entry.split('/');
  if (extra !== undefined || !net.isIP(address!)) return 'expected an IP address or a CIDR such as "10.0.0.0/8"';
  if (bits !== undefined) {
    const max = net.isIPv6(address!) ? 128 : 32;
    if (!/^\d+$/.test(bits) || Number(bits) > max) return `prefix length must be 0-${max}`;
  }
  return undefined;
}

/** `::ffff:1.2.3.4` → `1.2.3.4`. */
export function stripMapped(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

const kProxiedPeer = Symbol('portico.proxiedPeer');
type ProxiedSocket = object & { [kProxiedPeer]?: string };

/**
 * Records the client address a PROXY protocol header gave for a connection: from then on it stands for the
 * connection's peer (rate limits, access rules, the access log, X-Forwarded-For). Set on each socket object a
 * request may be read from (the raw one, and a TLS socket wrapping it).
 */
export function setProxiedPeer(socket: object, address: string): void {
  (socket as ProxiedSocket)[kProxiedPeer] = stripMapped(address);
}

/** The connection's peer: the PROXY protocol's address when one was given, else the TCP peer (`::ffff:` removed). */
export function connectionPeer(socket: { remoteAddress?: string | undefined }): string {
  return (socket as ProxiedSocket)[kProxiedPeer] ?? stripMapped(socket.remoteAddress ?? '');
}

/** Gives a socket wrapping another (TLS over the accepted one) the PROXY protocol's address the inner one had. */
export function inheritProxiedPeer(inner: object, outer: object): void {
  const address = (inner as ProxiedSocket)[kProxiedPeer];
  if (address !== undefined) (outer as ProxiedSocket)[kProxiedPeer] = address;
}
