import type { Store } from '../store/store.js';
import type { LeaseRow } from '../store/types.js';

/** The lease whose holder is the control plane that decides. */
export const LEADER_LEASE = 'control-plane';
/** How long a lease lasts unless renewed. */
export const LEASE_MS = 5000;
/** How often the leader renews it, and a standby tries for it. */
export const RENEW_MS = 1000;
/**
 * A leader that could not renew for this long stops deciding: it gives up before its lease can
 * lapse and a standby take it, so two control planes never decide at once (clocks in step, as
 * Kubernetes' leader election also assumes).
 */
export const GIVE_UP_MS = LEASE_MS - 2000;

/** What a lease's holder says of itself: where it serves and which process it is. */
export interface LeaderInfo {
  dataDir: string;
  pid: number;
  url?: string;
}

/** A lease holder, as a message: `the control plane of <data dir> (pid N, http://…)`. */
export function describeLeader(lease: LeaseRow): string {
  let info: Partial<LeaderInfo> = {};
  try {
    info = JSON.parse(lease.info) as LeaderInfo;
  } catch {
    // an older or foreign holder: its name says enough
  }
  const where = [info.pid ? `pid ${info.pid}` : undefined, info.url].filter(Boolean).join(', ');
  return `the control plane of ${lease.holder}${where ? ` (${where})` : ''} leads, its lease until ${lease.expiresAt}`;
}

/**
 * One control plane leads per database: it holds a lease in the store and renews it every second;
 * the others stand by and take it when it lapses (its holder died or lost the database). On SQLite
 * the data dir's lock already allows one server, and the lease is held the same way.
 */
export class Leadership {
  private timer?: NodeJS.Timeout;
  private lastRenewed = 0;
  private stopped = false;

  constructor(
    private readonly store: Store,
    /** Who holds it: a server's identity, the same across its restarts and takeovers (host and data dir). */
    readonly holder: string,
    private readonly info: () => LeaderInfo,
  ) {}

  /** Takes or renews the lease once; the lease as it is after the attempt. */
  async attempt(): Promise<{ leads: boolean; lease: LeaseRow }> {
    const now = Date.now();
    const lease = await this.store.acquireLease(LEADER_LEASE, this.holder, JSON.stringify(this.info()), new Date(now).toISOString(), new Date(now + LEASE_MS).toISOString());
    const leads = lease.holder === this.holder;
    if (leads) this.lastRenewed = now;
    return { leads, lease };
  }

  /** Resolves once this control plane leads, trying every RENEW_MS; `standby` hears of each new holder it waits for (after `known`). */
  async acquire(standby: (lease: LeaseRow) => void, known = ''): Promise<void> {
    let last = known;
    for (;;) {
      const { leads, lease } = await this.attempt().catch(() => ({ leads: false, lease: undefined }));
      if (leads) return;
      if (lease && lease.holder !== last) {
        last = lease.holder;
        standby(lease);
      }
      await new Promise((r) => setTimeout(r, RENEW_MS));
    }
  }

  /**
   * Renews the lease every RENEW_MS; `lost` is called once when another holds it, or when no renewal
   * succeeded for GIVE_UP_MS (a database that errs or does not answer at all).
   */
  keep(lost: (why: string) => void): void {
    let inFlight = false;
    const give = (why: string) => {
      if (this.stopped) return;
      this.stop();
      lost(why);
    };
    this.timer = setInterval(() => {
      if (Date.now() - this.lastRenewed >= GIVE_UP_MS) return give(`its lease could not be renewed for ${GIVE_UP_MS} ms`);
      if (inFlight) return;
      inFlight = true;
      this.attempt()
        .then(({ leads, lease }) => {
          if (!leads) give(`another took the lead: ${describeLeader(lease)}`);
        })
        .catch(() => {})
        .finally(() => (inFlight = false));
    }, RENEW_MS);
  }

  /** Stops renewing (the lease lapses by itself). */
  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  /** Stops renewing and gives the lease up, so a standby takes it at once. */
  async release(): Promise<void> {
    this.stop();
    await this.store.releaseLease(LEADER_LEASE, this.holder).catch(() => {});
  }
}
