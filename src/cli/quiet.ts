// When the keeper's resync may skip its pass: the last pass found everything as it must be, and nothing it reads
// has changed since — the nat tables and portmap's nftables tables (the kernel says so through `nft monitor`, which
// the keeper already follows), the node's addresses (`ip monitor`), libcni's result cache, the records of ADD and
// DEL and their refusals (inotify on their directories). A pass then has nothing to do, but reading 5,000 pods'
// files and rules to find that out costs a core a few percent at every resync. iptables-legacy tells nobody about
// changes: a node whose legacy nat table exists resyncs in full every time. Every QUIET_LIMIT-th resync in a row
// runs in full anyway, should an event have been lost (an inotify queue overflow, a monitor restarting).
import { type FSWatcher, watch } from "node:fs";

/** At the default resync (10 s), a full pass at least every five minutes. */
export const QUIET_LIMIT = 30;

export class Quiet {
  private quiet = false;
  private skipped = 0;
  /** Changes seen so far: one that comes while a pass runs may have missed its reads. */
  private changes = 0;
  private readonly watchers = new Map<string, FSWatcher>();

  constructor(
    private readonly dirs: readonly string[],
    signal: AbortSignal,
  ) {
    signal.addEventListener("abort", () => {
      for (const w of this.watchers.values()) w.close();
      this.watchers.clear();
    });
  }

  /** Something a pass reads may have changed: the next resync runs. */
  changed(): void {
    this.changes++;
    this.quiet = false;
  }

  /** A full pass starts: what passed() is to be told. Watches the directories from now on. */
  begin(): { changes: number; watching: boolean } {
    // One that does not exist yet, or cannot be watched, keeps the resyncs full.
    const watching = this.dirs.every((dir) => this.watch(dir));
    return { changes: this.changes, watching };
  }

  /** After a full pass: quiet when it settled, every place it read tells of its changes, and none came since it began. */
  passed(begun: { changes: number; watching: boolean }, settled: boolean, observable: boolean): void {
    this.skipped = 0;
    this.quiet = settled && observable && begun.watching && begun.changes === this.changes;
  }

  /** Whether this resync may skip its pass (counted: at most QUIET_LIMIT - 1 in a row). */
  skip(): boolean {
    if (!this.quiet || this.skipped >= QUIET_LIMIT - 1) return false;
    this.skipped++;
    return true;
  }

  private watch(dir: string): boolean {
    if (this.watchers.has(dir)) return true;
    try {
      const w = watch(dir, () => this.changed());
      w.on("error", () => {
        w.close();
        this.watchers.delete(dir);
        this.changed();
      });
      this.watchers.set(dir, w);
      return true;
    } catch {
      return false;
    }
  }
}
