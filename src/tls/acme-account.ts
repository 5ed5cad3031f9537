/**
 * ACME accounts (RFC 8555 §7.3), one per account id (CA and email): made or loaded once, however many sites share
 * it and however many of them order at the same time. Before this, each site starting together read "no account",
 * made its own key and registered it, and the last to save the key and the last to save the URL could differ: the
 * key on disk then did not own the account on disk, and the renewal 60 days later was signed for the wrong one.
 */
import * as acme from 'acme-client';
import type { AcmeConfig } from '../config/schema.js';
import { KeyedOnce } from '../http/keyed-once.js';
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

/** The accounts of one state directory. */
export class AcmeAccounts {
  readonly #state: StateDir;
  readonly #accounts = new KeyedOnce<AcmeAccount>();

  constructor(state: StateDir) {
    this.#state = state;
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
    if (key === undefined) {
      key = await acme.crypto.createPrivateEcdsaKey();
      await state.write(`accounts/${id}.key`, key);
    }
    const saved = state.read(`accounts/${id}.json`);
    const url = saved === undefined ? undefined : (JSON.parse(saved.toString()) as { url?: string }).url;
    if (url !== undefined) return { key, url };
    const client = acmeClient(settings, key);
    await client.createAccount({ termsOfServiceAgreed: settings.agree_tos, contact: [`mailto:${settings.email}`] });
    const registered = client.getAccountUrl();
    await state.write(`accounts/${id}.json`, JSON.stringify({ url: registered, directory: settings.directory, email: settings.email }));
    return { key, url: registered };
  }
}
