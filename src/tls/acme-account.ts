/**
 * ACME accounts (RFC 8555 §7.3), one per account id (CA and email): made or loaded once, however many sites share
 * it and however many of them order at the same time. Before this, each site starting together read "no account",
 * made its own key and registered it, and the last to save the key and the last to save the URL could differ: the
 * key on disk then did not own the account on disk, and the renewal 60 days later was signed for the wrong one.
 */
import * as acme from 'acme-client';
import type { AcmeConfig } from '../config/schema.js';
import { KeyedOnce } from '../http/keyed-once.js';
import { UNREACHABLE, type AcmeCluster } from './acme-cluster.js';
import type { StateDir } from './state-dir.js';

/** An account at the CA: its key (PEM) and its URL (the JWS `kid`). */
export interface AcmeAccount {
  readonly key: Buffer;
  readonly url: string;
}

/** An acme-client for `settings`' CA signing with `key`, as the account `url` when known (with its EAB, if any). */
export function acmeClient(settings: AcmeConfig, key: Buffer, url?: string): acme.Client {
  return new acme.Client({
    directoryUrl: settings.directory,
    accountKey: key,
    ...(url === undefined ? {} : { accountUrl: url }),
    ...(settings.eab === undefined ? {} : { externalAccountBinding: { kid: settings.eab.kid, hmacKey: settings.eab.hmac_key } }),
  });
}

/** The accounts of one state directory (and, in a cluster, of its Redis: the state directory keeps a copy). */
export class AcmeAccounts {
  readonly #state: StateDir;
  readonly #cluster: AcmeCluster | undefined;
  readonly #accounts = new KeyedOnce<AcmeAccount>();

  constructor(state: StateDir, cluster?: AcmeCluster) {
    this.#state = state;
    this.#cluster = cluster;
  }

  /**
   * The account `id` (its files `accounts/<id>.key` and `.json`): the saved one, or registered now with the saved
   * key (a CA answers a known key with its existing account, §7.3.1) or a new one. A failed registration is tried
   * again by the next order.
   */
  account(id: string, settings: AcmeConfig): Promise<AcmeAccount> {
    return this.#accounts.get(id, () => this.#loadOrRegister(id, settings));
  }

  async #loadOrRegister(id: string, settings: AcmeConfig): Promise<AcmeAccount> {
    const state = this.#state;
    let key = state.read(`accounts/${id}.key`);
    const saved = state.read(`accounts/${id}.json`);
    let url = saved === undefined ? undefined : (JSON.parse(saved.toString()) as { url?: string }).url;
    if (this.#cluster !== undefined) {
      // The cluster's account comes first: every box signs as the one account, whichever box registered it.
      const shared = await this.#sharedAccount(id, key);
      if (key === undefined || !shared.key.equals(key)) {
        key = shared.key;
        url = undefined;
        await state.write(`accounts/${id}.key`, key);
      }
      if (shared.url === undefined && url !== undefined) await this.#cluster.saveAccountUrl(id, url);
      url = shared.url ?? url;
    }
    if (key === undefined) {
      key = await acme.crypto.createPrivateEcdsaKey();
      await state.write(`accounts/${id}.key`, key);
    }
    if (url !== undefined) return { key, url };
    const client = acmeClient(settings, key);
    await client.createAccount({ termsOfServiceAgreed: settings.agree_tos, contact: [`mailto:${settings.email}`] });
    const registered = client.getAccountUrl();
    await this.#cluster?.saveAccountUrl(id, registered);
    await state.write(`accounts/${id}.json`, JSON.stringify({ url: registered, directory: settings.directory, email: settings.email }));
    return { key, url: registered };
  }

  /** The cluster's account `id`: the stored key (or `local`, or a new one, offered as it), and its URL when stored. */
  async #sharedAccount(id: string, local: Buffer | undefined): Promise<{ key: Buffer; url?: string }> {
    const cluster = this.#cluster!;
    const stored = await cluster.readAccount(id);
    if (stored === UNREACHABLE) throw new Error('Redis is unreachable: the cluster\'s ACME account cannot be read');
    if (stored.key !== undefined) return { key: stored.key, ...(stored.url === undefined ? {} : { url: stored.url }) };
    const claimed = await cluster.claimAccountKey(id, local ?? (await acme.crypto.createPrivateEcdsaKey()));
    if (claimed === UNREACHABLE) throw new Error('Redis is unreachable: the cluster\'s ACME account cannot be stored');
    return { key: claimed };
  }
}
