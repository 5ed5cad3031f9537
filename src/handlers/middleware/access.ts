/**
 * `access`: an ordered list of allow/deny rules on client addresses (IPv4 and IPv6 CIDRs, or `all`), as nginx's
 * `allow`/`deny`. The first rule that matches decides; a request no rule matches is allowed. A denied request
 * gets 403. The address is the client's (the peer, or behind `trusted_proxies` the one it forwarded).
 */
import net from 'node:net';
import { z } from 'zod';
import { checkTrustedEntry, stripMapped } from '../../http/client-address.js';
import { sendError } from '../../http/send.js';
import { defineMiddleware } from '../chain.js';

const target = z.string().min(1);
const rule = z.union([z.strictObject({ allow: target }), z.strictObject({ deny: target })]);
const options = z.array(rule).min(1, 'an access list has at least one rule');

/** One compiled rule: whether it allows, and the addresses it matches (undefined: all). */
interface Rule {
  allow: boolean;
  list: net.BlockList | undefined;
}

function compile(entries: z.output<typeof options>): Rule[] {
  return entries.map((entry) => {
    const allow = 'allow' in entry;
    const value = 'allow' in entry ? entry.allow : entry.deny;
    if (value === 'all') return { allow, list: undefined };
    const list = new net.BlockList();
    const [address, bits] = value.split('/');
    const family = net.isIPv6(address!) ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(address!, family);
    else list.addSubnet(address!, Number(bits), family);
    return { allow, list };
  });
}

/** The `access` middleware kind (stage `access`, the outermost). */
export const accessKind = defineMiddleware({
  kind: 'access',
  stage: 'access',
  options,
  check(entries) {
    const problems = [];
    for (const [i, entry] of entries.entries()) {
      const value = 'allow' in entry ? entry.allow : entry.deny;
      if (value === 'all') continue;
      const reason = checkTrustedEntry(value);
      if (reason !== undefined) problems.push({ keys: [i, 'allow' in entry ? 'allow' : 'deny'], message: `${reason} or "all", got ${JSON.stringify(value)}` });
    }
    return problems;
  },
  create(entries) {
    const rules = compile(entries);
    return function accessRules(ctx, next) {
      const address = stripMapped(ctx.clientAddress());
      const family = net.isIPv6(address) ? 'ipv6' : 'ipv4';
      for (const rule of rules) {
        if (rule.list === undefined || (address !== '' && rule.list.check(address, family))) {
          if (rule.allow) return next(ctx);
          return sendError(ctx, 403);
        }
      }
      return next(ctx);
    };
  },
});
