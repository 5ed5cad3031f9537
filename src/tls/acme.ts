/**
 * Automatic certificates (ACME, RFC 8555), as Caddy gets them: for each site with `tls.acme`, a manager orders
 * a certificate for the site's hosts on first start (in the background: the listeners serve meanwhile), keeps it
 * and its key in the state directory (reused at the next start while it is still good), and renews it when a
 * third of its lifetime remains. A failed order is logged with its reason and retried with a growing delay
 * (1 min, doubling, at most 1 h, with jitter); the certificate in place keeps serving. Each certificate goes live
 * through a `CertificateSink` (the TLS listeners' certificate store) for new handshakes, without a restart.
 *
 * Only http-01 is answered (on the plain listeners, see `challenges.ts`). acme-client does the protocol (JWS,
 * nonces, polling); its own per-request retries are turned off, as the order-level backoff here covers them.
 *
 * In a cluster (`AcmeOptions.cluster`, see `acme-cluster.ts`) the account, the certificate and its key live in
 * Redis as well (the state directory keeps this box's copy, which serves at a start while Redis is away): a manager
 * installs a newer certificate it finds there (at start, when another box announces one, when Redis comes back),
 * orders only while it holds the site's lock (otherwise it waits for the holder's certificate), shares its http-01
 * tokens, and orders nothing while Redis is away.
 */
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent } from 'node:https';
import * as acme from 'acme-client';
import type { Logger } from 'pino';
import type { AcmeConfig } from '../config/schema.js';
import { acmeClient, AcmeAccounts } from './acme-account.js';
import { OrderLock, UNREACHABLE, type AcmeCluster } from './acme-cluster.js';
import type { Http01Challenges } from './challenges.js';
import type { StateDir } from './state-dir.js';

/** Where a certificate goes live: `install` swaps it in for new handshakes on the named hosts. */
export interface CertificateSink {
  install(id: string, hosts: readonly string[], certPem: string, keyPem: string): void;
  /** Takes a certificate out again (its site was removed by a reload). */
  remove?(id: string): void;
}

/** acme-client's axios retries a failed request up to 5 times (5 s, 10 s, …): the order's own backoff replaces that. */
(acme.axios.defaults as { acmeSettings?: { retryMaxAttempts: number } }).acmeSettings!.retryMaxAttempts = 0;

/**
 * acme-client's response interceptor reads `error.response.config` of every failed request, so a request that got
 * no answer at all (connection refused, TLS failure) surfaces as "Cannot read properties of undefined". This one
 * runs before it (axios's `handlers` list is public) and turns such an error into one that says what happened;
 * acme-client passes an error without `config` through unchanged.
 */
acme.axios.interceptors.response.use(undefined, (error: { response?: unknown; config?: { url?: string }; code?: string; message?: string }) => {
  if (error.response !== undefined || error.config === undefined) return Promise.reject(error);
  const url = error.config.url === undefined ? 'the ACME server' : new URL(error.config.url).origin;
  return Promise.reject(new Error(`cannot reach ${url}: ${error.code ?? ''} ${error.message ?? ''}`.trim(), { cause: error }));
});
const responseHandlers = (acme.axios.interceptors.response as unknown as { handlers: unknown[] }).handlers;
responseHandlers.unshift(responseHandlers.pop());

/** HTTPS agents trusting `trusted_roots`, by the ACME server's origin (acme-client has one shared axios instance). */
const agents = new Map<string, Agent>();
acme.axios.interceptors.request.use((request) => {
  if (agents.size > 0 && request.url !== undefined) {
    const agent = agents.get(new URL(request.url).origin);
    if (agent !== undefined) request.httpsAgent = agent;
  }
  return request;
});

/** Makes requests to `directory`'s origin trust the CA certificates in `pem` (beside the system's). */
function trustRoots(directory: string, pem: string): void {
  agents.set(new URL(directory).origin, new Agent({ ca: pem, keepAlive: false }));
}

/** Timers run at most this far ahead (setTimeout's limit is 2^31-1 ms); a longer wait is re-planned when it ends. */
const MAX_TIMER = 2 ** 31 - 1;

/** A short stable id: readable prefix, hash of what identifies the thing. */
function fileId(prefix: string, ...parts: string[]): string {
  const safe = prefix.replace(/[^A-Za-z0-9.-]/g, '_').slice(0, 64);
  return `${safe}-${createHash('sha256').update(parts.join('\0')).digest('hex').slice(0, 16)}`;
}

/** What a manager needs besides its site. */
export interface AcmeOptions {
  state: StateDir;
  sink: CertificateSink;
  challenges: Http01Challenges;
  logger: Logger;
  /** The clock (ms since the epoch); tests move it to bring a renewal near. */
  now?: () => number;
  /** First retry delay after a failed order (1 min); it doubles after each failure, up to `retryMaxMs` (1 h). */
  retryFirstMs?: number;
  retryMaxMs?: number;
  /** The accounts shared by the managers of one state directory (made per manager when absent). */
  accounts?: AcmeAccounts;
  /** The cluster's side (a `cluster` section): certificates, account, lock and tokens in Redis. */
  cluster?: AcmeCluster | undefined;
}

/** A certificate in use and when it should be renewed. */
interface Held {
  cert: string;
  key: string;
  notBefore: number;
  notAfter: number;
}

/** When a certificate is renewed: when a third of its lifetime remains. */
export function renewalTime(notBefore: number, notAfter: number): number {
  return notAfter - (notAfter - notBefore) / 3;
}

/** Reads a stored certificate and key; undefined when they are missing, do not parse, do not match or miss a host. */
function readHeld(certPem: string, keyPem: string, hosts: readonly string[]): Held | undefined {
  try {
    const x509 = new X509Certificate(certPem);
    if (!x509.checkPrivateKey(createPrivateKey(keyPem))) return undefined;
    const names = new Set((x509.subjectAltName ?? '').split(', ').map((entry) => entry.replace(/^DNS:/, '').toLowerCase()));
    if (!hosts.every((host) => names.has(host.toLowerCase()))) return undefined;
    return { cert: certPem, key: keyPem, notBefore: Date.parse(x509.validFrom), notAfter: Date.parse(x509.validTo) };
  } catch {
    return undefined;
  }
}

/** The certificate of one site: kept, installed, renewed. */
export class AcmeManager {
  /** The sink's id for this certificate (also its file name in the state directory). */
  readonly id: string;
  readonly hosts: readonly string[];
  readonly #settings: AcmeConfig;
  readonly #options: AcmeOptions;
  readonly #now: () => number;
  readonly #accountId: string;
  readonly #accounts: AcmeAccounts;
  #held: Held | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #stopped = false;
  #ordering = false;
  readonly #cluster: AcmeCluster | undefined;
  #unwatch: (() => void) | undefined;
  /** Whether this manager is waiting for Redis to order (logged once per wait). */
  #awayLogged = false;
  /** The holder this manager was last told is ordering (logged once per holder). */
  #waitingFor: string | undefined;
  /** The delay before the retry of the last failed order. */
  #retryDelay = 0;

  constructor(hosts: readonly string[], settings: AcmeConfig, options: AcmeOptions) {
    this.hosts = hosts;
    this.#settings = settings;
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.id = fileId(hosts[0] ?? 'site', settings.directory, ...[...hosts].map((h) => h.toLowerCase()).sort());
    this.#accountId = fileId(new URL(settings.directory).host, settings.directory, settings.email);
    this.#cluster = options.cluster;
    this.#accounts = options.accounts ?? new AcmeAccounts(options.state, options.cluster);
    if (settings.trusted_roots !== undefined) trustRoots(settings.directory, readFileSync(settings.trusted_roots, 'utf8'));
  }

  /** The certificate in use (PEM chain), if any. */
  get certificate(): string | undefined {
    return this.#held?.cert;
  }

  /** When the certificate in use expires (ms since the epoch), if there is one. */
  get notAfter(): number | undefined {
    return this.#held?.notAfter;
  }

  /** When the last order succeeded (ms since the epoch; undefined: none since start) and the last one's error, if it failed. */
  lastRenewal: number | undefined = undefined;
  lastError: string | undefined = undefined;

  /** Installs the stored certificate when it is still good, and plans the next order (now, when there is none). */
  start(): void {
    const cert = this.#options.state.read(`certificates/${this.id}.crt`);
    const key = this.#options.state.read(`certificates/${this.id}.key`);
    const held = cert === undefined || key === undefined ? undefined : readHeld(cert.toString(), key.toString(), this.hosts);
    if (held !== undefined && held.notAfter > this.#now() && this.#install(held)) {
      this.#options.logger.info(
        { hosts: this.hosts, notAfter: new Date(held.notAfter).toISOString(), renewAt: new Date(renewalTime(held.notBefore, held.notAfter)).toISOString() },
        'acme: certificate loaded from the state directory',
      );
    }
    if (this.#cluster === undefined) return this.#plan();
    // What another box stored or announced (and Redis coming back) is compared with what is installed.
    this.#unwatch = this.#cluster.watch(this.id, () => void this.#resync());
    void this.#resync();
  }

  /** Clears the timer; an order in flight still saves its certificate, but installs nothing. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#unwatch?.();
  }

  /** Makes `held` the certificate in use; false (logged) when the sink refuses it: it is then ordered anew. */
  #install(held: Held): boolean {
    try {
      this.#options.sink.install(this.id, this.hosts, held.cert, held.key);
    } catch (err) {
      this.#options.logger.warn({ hosts: this.hosts, reason: (err as Error).message }, 'acme: the stored certificate was refused; ordering a new one');
      return false;
    }
    this.#held = held;
    return true;
  }

  /** Orders now when the certificate is missing or due, or sets the timer for when it will be. */
  #plan(): void {
    if (this.#stopped) return;
    const held = this.#held;
    const wait = held === undefined ? 0 : renewalTime(held.notBefore, held.notAfter) - this.#now();
    if (wait <= 0) return void this.#obtain();
    this.#wait(wait, () => this.#plan());
  }

  #wait(ms: number, then: () => void): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(then, Math.min(ms, MAX_TIMER));
    this.#timer.unref();
  }

  async #obtain(): Promise<void> {
    if (this.#ordering || this.#stopped) return;
    this.#ordering = true;
    let replan: boolean;
    try {
      replan = this.#cluster === undefined ? await this.#attempt() : await this.#obtainShared(this.#cluster);
    } finally {
      this.#ordering = false;
    }
    if (replan) this.#plan();
  }

  /** Whether the certificate in use is missing or due for renewal. */
  #due(): boolean {
    const held = this.#held;
    return held === undefined || renewalTime(held.notBefore, held.notAfter) <= this.#now();
  }

  /**
   * A cluster's order: the certificate another box stored is taken when it is newer; otherwise, when one is still
   * due, an order under the site's lock, or a wait for the box that holds it (until its lease ends, or sooner when
   * it announces its certificate). True when the manager should plan again (a timer is set otherwise).
   */
  async #obtainShared(cluster: AcmeCluster): Promise<boolean> {
    let lock: OrderLock | undefined;
    try {
      const stored = await cluster.readCertificate(this.id);
      if (stored === UNREACHABLE) return this.#awaitRedis();
      this.#awayLogged = false;
      await this.#adoptNewer(stored);
      if (!this.#due()) return true;
      const taken = await cluster.lock(this.id);
      if (taken === UNREACHABLE) return this.#awaitRedis();
      if (!(taken instanceof OrderLock)) {
        const waitingFor = `${taken.failed === true ? 'failed' : 'held'}:${taken.holder}`;
        if (this.#waitingFor !== waitingFor) {
          this.#waitingFor = waitingFor;
          if (taken.failed === true) {
            this.#options.logger.info({ hosts: this.hosts, failedOn: taken.holder, retryInMs: taken.ttlMs }, 'acme: the cluster\'s last order of this certificate failed; the next one waits for its backoff');
          } else this.#options.logger.info({ hosts: this.hosts, holder: taken.holder, leaseLeftMs: taken.ttlMs }, 'acme: another box is ordering this certificate; waiting for it');
        }
        // Its certificate's announcement comes first (see `start`); the lease running out (its box died) comes next.
        this.#wait(taken.ttlMs + 100 + Math.floor(Math.random() * 400), () => void this.#obtain());
        return false;
      }
      lock = taken;
      this.#waitingFor = undefined;
      // Between the read and the lock, the previous holder may have stored its certificate.
      const again = await cluster.readCertificate(this.id);
      if (again !== UNREACHABLE) await this.#adoptNewer(again);
      if (!this.#due()) return true;
      const failures = this.#failures;
      const done = await this.#attempt(lock);
      // Failed: the whole cluster waits for this box's backoff before the next order.
      if (this.#failures > failures) await cluster.holdBack(this.id, this.#retryDelay);
      return done;
    } catch (err) {
      this.#failed(err as Error);
      return false;
    } finally {
      await lock?.release();
    }
  }

  /** Redis is away: nothing is ordered (said once); Redis back (`start`'s watch) or a timer tries again. */
  #awaitRedis(): false {
    if (!this.#awayLogged) {
      this.#awayLogged = true;
      this.#options.logger.warn(
        { hosts: this.hosts, serving: this.#held !== undefined },
        'acme: Redis unreachable: no certificate is ordered until it is back; the installed certificate keeps serving',
      );
    }
    this.#wait(this.#cluster!.leaseMs, () => void this.#obtain());
    return false;
  }

  /** Installs (and keeps a copy of) a stored certificate when it is good and lasts longer than the one in use. */
  async #adoptNewer(stored: { cert: string; key: string; box: string } | undefined): Promise<boolean> {
    if (stored === undefined) return false;
    const held = readHeld(stored.cert, stored.key, this.hosts);
    if (held === undefined || held.notAfter <= this.#now()) return false;
    if (this.#held !== undefined && (held.notAfter <= this.#held.notAfter || held.cert === this.#held.cert)) return false;
    if (this.#stopped || !this.#install(held)) return false;
    const { state, logger } = this.#options;
    await state.write(`certificates/${this.id}.key`, held.key);
    await state.write(`certificates/${this.id}.crt`, held.cert);
    logger.info(
      { hosts: this.hosts, from: stored.box, serial: new X509Certificate(held.cert).serialNumber, notAfter: new Date(held.notAfter).toISOString() },
      'acme: certificate installed from the cluster',
    );
    return true;
  }

  /**
   * Compares what Redis has with what is installed: a newer stored certificate is installed; ours is stored when
   * Redis has none or an older one (Redis restarted empty). Then plans (an order, when one is due).
   */
  async #resync(): Promise<void> {
    const cluster = this.#cluster!;
    if (this.#stopped || this.#ordering) return;
    try {
      const stored = await cluster.readCertificate(this.id);
      if (stored !== UNREACHABLE && !(await this.#adoptNewer(stored))) {
        const held = this.#held;
        const storedNotAfter = stored === undefined ? 0 : (readHeld(stored.cert, stored.key, this.hosts)?.notAfter ?? 0);
        if (held !== undefined && held.notAfter > storedNotAfter) {
          await cluster.writeCertificate(this.id, held.cert, held.key, held.notAfter, new X509Certificate(held.cert).serialNumber);
        }
      }
    } catch (err) {
      this.#options.logger.warn({ hosts: this.hosts, reason: (err as Error).message }, 'acme: cannot compare the certificate with the cluster\'s');
    }
    if (!this.#ordering) this.#plan();
  }

  /**
   * One order, its result saved and installed, or its failure logged and a retry set; true when it succeeded.
   * A manager stopped meanwhile still saves what the CA issued (the next start uses it instead of ordering again,
   * which a CA's rate limits would count) but installs nothing.
   */
  async #attempt(lock?: OrderLock): Promise<boolean> {
    const { logger, state, sink } = this.#options;
    const renewal = this.#held !== undefined;
    logger.info({ hosts: this.hosts, directory: this.#settings.directory, renewal }, 'acme: ordering a certificate');
    try {
      const { cert, key } = await this.#order(lock !== undefined);
      const held = readHeld(cert, key, this.hosts);
      if (held === undefined) throw new Error('the CA issued a certificate that does not name every host or match its key');
      await state.write(`certificates/${this.id}.key`, key);
      await state.write(`certificates/${this.id}.crt`, cert);
      // The other boxes install it when they hear of it; unstored (Redis away), it is stored at the re-sync.
      if (lock !== undefined && !(await this.#cluster!.writeCertificate(this.id, cert, key, held.notAfter, new X509Certificate(cert).serialNumber))) {
        logger.warn({ hosts: this.hosts }, 'acme: the certificate was not stored in Redis (unreachable, or a longer-lasting one is there); it is kept here');
      }
      this.#failures = 0;
      this.lastRenewal = this.#now();
      this.lastError = undefined;
      if (this.#stopped) return false;
      sink.install(this.id, this.hosts, cert, key);
      this.#held = held;
      logger.info(
        { hosts: this.hosts, notAfter: new Date(held.notAfter).toISOString(), renewAt: new Date(renewalTime(held.notBefore, held.notAfter)).toISOString(), renewal },
        renewal ? 'acme: certificate renewed' : 'acme: certificate obtained',
      );
    } catch (err) {
      return this.#failed(err as Error);
    }
    return true;
  }

  /** A failed order: logged with its reason, and retried after a growing delay. */
  #failed(err: Error): false {
    this.#failures++;
    this.lastError = err.message;
    const first = this.#options.retryFirstMs ?? 60_000;
    const max = this.#options.retryMaxMs ?? 3_600_000;
    // ±10% jitter: many sites failing together (the CA down) do not all come back in the same second.
    const delay = Math.round(Math.min(max, first * 2 ** Math.min(this.#failures - 1, 30)) * (0.9 + Math.random() * 0.2));
    this.#retryDelay = delay;
    this.#options.logger.warn(
      { hosts: this.hosts, reason: err.message, attempt: this.#failures, retryInMs: delay, serving: this.#held !== undefined },
      'acme: certificate order failed; retrying',
    );
    if (!this.#stopped) this.#wait(delay, () => void this.#obtain());
    return false;
  }

  /**
   * One order, start to finish: account (made or reused), key and CSR, http-01 challenges, certificate. `shared`:
   * the tokens go to the cluster's Redis too, for whichever box the CA's validation reaches.
   */
  async #order(shared: boolean): Promise<{ cert: string; key: string }> {
    const { challenges } = this.#options;
    const settings = this.#settings;
    // Shared with every site on the same account: made once, even when they all order at first start.
    const account = await this.#accounts.account(this.#accountId, settings);
    const client = acmeClient(settings, account.key, account.url);
    const [key, csr] = await acme.crypto.createCsr({ commonName: this.hosts[0]!, altNames: [...this.hosts] }, await acme.crypto.createPrivateEcdsaKey());
    const cert = await client.auto({
      csr,
      email: settings.email,
      termsOfServiceAgreed: settings.agree_tos,
      challengePriority: ['http-01'],
      // The CA checks; a self-check would need this machine to reach its own public name (as Caddy, none is made).
      skipChallengeVerification: true,
      challengeCreateFn: async (_authz, challenge, keyAuthorization) => {
        if (challenge.type !== 'http-01') throw new Error(`challenge ${challenge.type} is not supported (only http-01)`);
        challenges.set(challenge.token, keyAuthorization);
        if (shared && !(await this.#cluster!.setToken(challenge.token, keyAuthorization))) {
          throw new Error('the http-01 token could not be put in Redis (unreachable): another box could not answer the CA');
        }
      },
      challengeRemoveFn: async (_authz, challenge) => {
        challenges.delete(challenge.token);
        if (shared) await this.#cluster!.deleteToken(challenge.token);
      },
    });
    return { cert, key: key.toString() };
  }
}

/** A site as the managers see it. */
export interface AcmeSite {
  readonly hosts?: readonly string[] | undefined;
  readonly tls?: { readonly acme?: AcmeConfig | undefined } | undefined;
}

/**
 * The managers of a config's ACME sites. `update` (at start and on each reload) keeps the manager of a site whose
 * hosts and settings are unchanged — a SIGHUP orders nothing new — starts one for each new site and stops the
 * managers of sites that are gone.
 */
export class AcmeSites {
  readonly #options: AcmeOptions;
  #managers = new Map<string, AcmeManager>();

  constructor(options: AcmeOptions) {
    // One set of accounts for every manager, across reloads: sites on one account share it.
    this.#options = { ...options, accounts: options.accounts ?? new AcmeAccounts(options.state, options.cluster) };
    options.cluster?.shareChallenges(options.challenges);
  }

  /** Every site's manager (status). */
  managers(): AcmeManager[] {
    return [...this.#managers.values()];
  }

  /** The manager of the site naming `host`, if any (for tests and status). */
  manager(host: string): AcmeManager | undefined {
    return [...this.#managers.values()].find((manager) => manager.hosts.includes(host));
  }

  update(sites: readonly AcmeSite[]): void {
    const next = new Map<string, AcmeManager>();
    const started: AcmeManager[] = [];
    for (const site of sites) {
      const settings = site.tls?.acme;
      if (settings === undefined || site.hosts === undefined) continue;
      const key = JSON.stringify([site.hosts, settings]);
      let manager = this.#managers.get(key) ?? next.get(key);
      if (manager === undefined) {
        manager = new AcmeManager(site.hosts, settings, this.#options);
        started.push(manager);
      }
      next.set(key, manager);
    }
    for (const [key, manager] of this.#managers) {
      if (next.has(key)) continue;
      manager.stop();
      if (!started.some((other) => other.id === manager.id)) this.#options.sink.remove?.(manager.id);
    }
    this.#managers = next;
    for (const manager of started) manager.start();
  }

  /** Stops every manager's timer (and, in a cluster, listening to the other boxes). */
  stop(): void {
    for (const manager of this.#managers.values()) manager.stop();
    this.#managers.clear();
    this.#options.cluster?.stop();
  }
}
